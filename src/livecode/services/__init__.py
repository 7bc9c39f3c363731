"""What the API does, with no Flask objects: sessions, executions, accounts."""
