"""The JSON Schemas Ferry ships are valid schemas of their draft (checked here once,
not at every start of the command)."""

import jsonschema
import pytest

from ferry.model import manifest, stack
from ferry.model.schema import Validator


@pytest.mark.parametrize("schema", [stack.STACK_SCHEMA, manifest.SCHEMA], ids=["stack.schema.yml", "manifest"])
def test_every_shipped_schema_is_valid_for_its_draft(schema):
    Validator.check_schema(schema)


def test_a_malformed_schema_would_be_caught():
    with pytest.raises(jsonschema.SchemaError):
        Validator.check_schema({**stack.STACK_SCHEMA, "type": 12})
