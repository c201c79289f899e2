"""Tokens of the two test workspaces and their Authorization headers."""

TOKENS = {"alpha": "alpha-token-0123456789", "beta": "beta-token-0123456789"}


def auth(workspace: str = "alpha") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[workspace]}"}
