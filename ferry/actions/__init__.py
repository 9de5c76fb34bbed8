"""Actions: what each command does, one module each, thin.

An action resolves its input on the controller (:mod:`ferry.model`,
:mod:`ferry.controller`), opens hosts with :func:`ferry.host.session.open_hosts`, and
wraps every change in :func:`ferry.host.session.guarded` (lock + audit).
"""
