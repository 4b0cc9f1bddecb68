from cairn.cli import entry

entry()
