"""Ferry: deploy Docker Compose stacks over SSH to air-gapped hosts, and keep them alive.

Three layers, each importing only the ones below it:

- ``ferry.model``       pure: stack definitions, rendering, the Compose model and its
                        checks, variables, release and backup rules. No hosts, no processes.
- ``ferry.host``        the host boundary: the transport (SSH, the only code that talks
                        to hosts), command builders next to the parsers of their output,
                        the session that opens hosts and guards every change (lock + audit),
                        verification with testinfra.
- ``ferry.actions``     what each command does (deploy, rollback, status...), one module each.

Beside them: ``ferry.controller`` (the controller's own files and tools: inventory,
project, bundle building, the Docker payload), ``ferry.roles`` (loads ``roles/<name>/``),
``ferry.cli`` (the ``ferry`` command) and ``ferry.ui`` (rich output).
"""

__version__ = "0.1.0"
