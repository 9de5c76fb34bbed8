"""Every role folder loads (its imports resolve) and defines run()."""

from ferry.roles import ROLES_DIR, load_role


def test_every_role_module_imports_and_has_run():
    names = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "role.py").is_file())
    assert {"upload-bundle", "load-images", "prune-releases"} <= set(names)
    for name in names:
        assert callable(load_role(name).run), name
