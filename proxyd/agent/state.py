"""What registration leaves in the state dir: manager URL, proxy id/name and API key (`agent.json`, 0600)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from proxyd.statedir import StateDir

AGENT_FILE = "agent.json"


@dataclass(frozen=True)
class AgentState:
    manager_url: str
    proxy_id: int
    proxy_name: str
    api_key: str
    ca_file: str | None = None  # a private CA for the manager's certificate (else the system store)

    def __repr__(self) -> str:  # the API key must never end up in a log line
        return f"AgentState(manager_url={self.manager_url!r}, proxy_id={self.proxy_id}, proxy_name={self.proxy_name!r})"


def load(state: StateDir) -> AgentState | None:
    """The stored registration, or None when the state dir was never registered (or the file is damaged)."""
    data = state.read_json(AGENT_FILE)
    if data is None:
        return None
    try:
        return AgentState(
            manager_url=str(data["manager_url"]).rstrip("/"),
            proxy_id=int(data["proxy_id"]),
            proxy_name=str(data.get("proxy_name", "")),
            api_key=str(data["api_key"]),
            ca_file=str(data["ca_file"]) if data.get("ca_file") else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def save(state: StateDir, agent: AgentState) -> None:
    state.ensure()
    state.write_json_private(AGENT_FILE, asdict(agent))
