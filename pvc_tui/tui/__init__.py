"""The Textual dashboard (`pvc-tui` with no command)."""
