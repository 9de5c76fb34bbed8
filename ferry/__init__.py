"""Ferry: deploy Docker Compose stacks over SSH to air-gapped hosts, and keep them alive.

Layout of the package (the SSH boundary is ``ferry.transport``; everything else either
builds commands, parses their output, or decides what to run):

- ``errors``      user-facing errors (one line, no traceback)
- ``inventory``   Ansible YAML inventory: hosts, groups, variable precedence
- ``commands``    pure command builders (argument lists, no I/O)
- ``facts``       pure parsers of command output
- ``transport``   the only code that talks to hosts (SSH via Fabric/paramiko, or fake)
- ``bundle``      offline bundle: build on the controller, manifest, checksums
- ``stack``       stack definitions (``stacks/<name>/stack.yml``) and rendering
- ``roles``       loads ``roles/<name>/`` (defaults.yml + role.py) and runs them
- ``verify``      testinfra checks derived from a stack definition
- ``localdocker`` / ``images`` / ``dockerdist`` / ``sandbox``: controller-side helpers
"""

__version__ = "0.1.0"
