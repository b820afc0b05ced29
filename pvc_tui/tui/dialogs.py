"""Modal dialogs: confirm (Cancel focused), type-the-name confirm, target picker, prompt
and choice.

Every text shown here may come from the cluster: it is given as `Text`/`Content`,
never as markup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

from pvc_tui.cluster.text import printable


def safe_lines(text: str, limit: int = 300) -> Text:
    """Multi-line untrusted text, each line made printable."""
    return Text("\n".join(printable(line, limit) for line in text.splitlines()))


class ConfirmScreen(ModalScreen[bool]):
    """Ask before a mutating action; Cancel has the focus, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, detail: str = "", confirm_label: str = "Confirm") -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._detail = detail
        self._confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(printable(self._title, 300), style="bold"), classes="dialog-title")
            if self._detail:
                yield Label(safe_lines(self._detail), classes="dialog-detail")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel", variant="default")
                yield Button(self._confirm_label, id="confirm", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        """Close without acting."""
        self.dismiss(False)


class TypeNameScreen(ModalScreen[bool]):
    """Confirm a dangerous action by typing the exact name it applies to."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, detail: str, name: str, confirm_label: str) -> None:
        super().__init__(classes="dialog-screen")
        self._title, self._detail, self._expected = title, detail, name
        self._confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(printable(self._title, 300), style="bold"), classes="dialog-title")
            yield Label(safe_lines(self._detail), classes="dialog-detail")
            yield Label(Text.assemble("Type ", (self._expected, "bold"), " to confirm:"))
            yield Input(id="typed", placeholder=self._expected)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self._confirm_label, id="confirm", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Input.Changed, "#typed")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm", Button).disabled = event.value != self._expected

    @on(Input.Submitted, "#typed")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value == self._expected:
            self.dismiss(True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        """Close without acting."""
        self.dismiss(False)


@dataclass(frozen=True)
class TargetChoice:
    """One line of the target picker: a node, and why it may not be chosen."""

    node: str
    detail: str
    rejected: str = ""  # non-empty: not a valid target, and why
    best: bool = False


class TargetPicker(ModalScreen[str | None]):
    """Pick a target node; the selector's choice is preselected and invalid nodes are
    listed (disabled) with the reason."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, choices: list[TargetChoice]) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._choices = choices

    def compose(self) -> ComposeResult:
        options = []
        for choice in self._choices:
            label = Text.assemble((printable(choice.node, 40).ljust(12), "bold"), "  ")
            if choice.rejected:
                label.append(f"not valid: {printable(choice.rejected, 120)}", style="red")
            else:
                label.append(printable(choice.detail, 120))
                if choice.best:
                    label.append("  ← selector's choice", style="bold green")
            options.append(Option(label, id=choice.node, disabled=bool(choice.rejected)))
        with Vertical(classes="dialog picker"):
            yield Label(Text(printable(self._title, 300), style="bold"), classes="dialog-title")
            yield OptionList(*options, id="targets")
            yield Label(Text("enter: choose   escape: cancel", style="dim"))

    def on_mount(self) -> None:
        targets = self.query_one("#targets", OptionList)
        targets.focus()
        for index, choice in enumerate(self._choices):
            if choice.best:
                targets.highlighted = index

    @on(OptionList.OptionSelected, "#targets")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        """Close without choosing."""
        self.dismiss(None)


@dataclass(frozen=True)
class PromptField:
    """One input of a prompt: its label, a placeholder and a starting value."""

    label: str
    placeholder: str = ""
    value: str = ""


class PromptScreen(ModalScreen[list[str] | None]):
    """Ask for one or more values; `check` turns them into an error line or None.

    Enter in the last field (or OK) submits; a bad value shows its one-line error and
    keeps the dialog open; Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: list[PromptField],
                 check: Callable[[list[str]], str | None], confirm_label: str = "OK",
                 detail: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self._title, self._fields, self._check = title, fields, check
        self._confirm_label, self._detail = confirm_label, detail

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog picker"):
            yield Label(Text(printable(self._title, 300), style="bold"), classes="dialog-title")
            if self._detail:
                yield Label(safe_lines(self._detail), classes="dialog-detail")
            for index, f in enumerate(self._fields):
                yield Label(Text(printable(f.label, 100)))
                yield Input(value=f.value, placeholder=f.placeholder, id=f"field-{index}",
                            classes="prompt-field")
            yield Label("", id="prompt-error", classes="prompt-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(self._confirm_label, id="confirm", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#field-0", Input).focus()

    def _values(self) -> list[str]:
        return [self.query_one(f"#field-{i}", Input).value.strip()
                for i in range(len(self._fields))]

    def _submit(self) -> None:
        values = self._values()
        error = self._check(values)
        if error:
            self.query_one("#prompt-error", Label).update(Text(printable(error, 200),
                                                               style="bold red"))
            return
        self.dismiss(values)

    @on(Input.Submitted)
    def _entered(self, event: Input.Submitted) -> None:
        index = int(str(event.input.id).rpartition("-")[2])
        if index + 1 < len(self._fields):
            self.query_one(f"#field-{index + 1}", Input).focus()
        else:
            self._submit()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        """Close without acting."""
        self.dismiss(None)


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one of a few named choices (snapshots, flags); escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, choices: list[tuple[str, str]]) -> None:
        super().__init__(classes="dialog-screen")
        self._title = title
        self._choices = choices  # (value, description)

    def compose(self) -> ComposeResult:
        options = [Option(Text.assemble((printable(value, 60).ljust(16), "bold"), "  ",
                                        printable(text, 100)), id=f"choice-{i}")
                   for i, (value, text) in enumerate(self._choices)]
        with Vertical(classes="dialog picker"):
            yield Label(Text(printable(self._title, 300), style="bold"), classes="dialog-title")
            yield OptionList(*options, id="targets")
            yield Label(Text("enter: choose   escape: cancel", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#targets", OptionList).focus()

    @on(OptionList.OptionSelected, "#targets")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._choices[int(str(event.option.id).rpartition("-")[2])][0])

    def action_cancel(self) -> None:
        """Close without choosing."""
        self.dismiss(None)
