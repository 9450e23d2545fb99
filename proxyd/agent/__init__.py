"""Managed mode: proxyd as an agent of the manager (registration, config long-poll, heartbeats).

`manager_source()` is the config source `proxyd run` uses when no `--config` is given.
"""

from proxyd.agent.runner import manager_source

__all__ = ["manager_source"]
