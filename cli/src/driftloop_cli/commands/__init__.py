"""Sub-commands that need heavier imports, loaded only when used."""
