"""Safe YAML for specs and command-line values: whatever the bytes, a Python value or one line.

`yaml.safe_load` already refuses arbitrary objects, but a hostile or broken file can still hurt:
an "alias bomb" (the billion-laughs pattern) expands a few lines into billions of values, a
duplicate key silently keeps only its last value, a 5,000-digit number makes `int()` raise, and
binary or non-UTF-8 bytes end in a multi-line traceback. Here every such file is refused in one
line that names the source and, where there is one, the line in it; no value shown is longer than
`MAX_SHOWN` characters.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError

MAX_BYTES = 8 * 2**20  # a 120,000-value axis is about 1 MiB
MAX_DEPTH = 64  # a spec nests 5 deep; a flow of 100,000 `[` would overflow the composer
MAX_ALIAS_VALUES = 10_000  # values that aliases may add by repeating what their anchor holds
MAX_NUMBER_CHARS = 100  # 2**31 has 10 digits; int() refuses more than 4,300
MAX_SHOWN = 60

# The characters YAML itself refuses (tab, line breaks and NEL aside): C0 and C1 controls, DEL,
# surrogates and the two non-characters. Found here first so the message can say which and where.
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
# What may not appear in a string that reaches a file name, a job name or a shell line: C0 and C1
# controls, DEL, and the Unicode line and paragraph separators.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(MnistsweepError):
    """The text is not one safe YAML document; the message starts with its source."""


class ListTooLong(YamlError):
    """A list longer than the caller's `max_list`, found before the document is built."""

    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.line = line


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """repr() of a value for an error line: one line, at most `limit` characters, and bounded
    in time and memory however large or self-referencing the value is."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxtuple, short.maxdict = 2, 4, 4, 4
    short.maxstring = short.maxother = short.maxlong = limit
    try:
        text = short.repr(value)
    except ValueError:  # an int above Python's 4,300-digit str() limit
        text = f"<an integer of {value.bit_length() if isinstance(value, int) else '?'} bits>"
    text = _NOT_PRINTABLE.sub("?", text.replace("\n", "\\n"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """Text typed by a user, for an error line: as is when it is one short printable line, else
    its capped repr()."""
    if len(text) <= limit and not CONTROL_CHARACTERS.search(text):
        return text
    return shown(text, limit)


def read_yaml(path: Path, *, max_list: int | None = None) -> object:
    """The one document of the YAML file at `path` (None for an empty file); `max_list` refuses
    longer lists before the document is built."""
    try:
        data = fsio.read_bytes(path, MAX_BYTES, single_link=False)
    except FileNotFoundError:
        raise YamlError(f"{path}: cannot read spec (No such file or directory)") from None
    except fsio.TooLarge:
        raise YamlError(f"{path}: larger than {MAX_BYTES // 2**20} MiB; not a spec") from None
    except fsio.UnreadableFile as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise YamlError(
            f"{path}: cannot read spec ({reason}); a spec is a YAML text file"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise YamlError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at line {line}); "
            "a spec is a YAML text file"
        ) from None
    return parse_yaml(text.removeprefix("\ufeff"), str(path), max_list=max_list)


def parse_yaml(text: str, source: str, *, max_list: int | None = None) -> object:
    """The one document of `text`; errors start with `source` (a file name or a flag)."""
    unprintable = _NOT_PRINTABLE.search(text)
    if unprintable:
        line = text.count("\n", 0, unprintable.start()) + 1
        character = unprintable.group()
        what = "a NUL byte (binary file?)" if character == "\0" else "a control character"
        raise YamlError(f"{source}: line {line}: {what} U+{ord(character):04X}; YAML allows none")
    loader = _SafeLoader(text)
    try:
        _check_events(text, source, max_list)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, loader, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        if "maximum nesting depth" in str(error.problem):  # LibYAML's own limit, 1,000 levels
            # Its scanner reads flow collections ahead of the events checked above, so its limit
            # can come first: one rule, one message, whatever the style.
            raise YamlError(
                f"{source}: line {_line(mark)}: nested deeper than {MAX_DEPTH} levels"
            ) from None
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(filter(None, (error.context, error.problem))) or "invalid YAML"
        raise YamlError(f"{source}: malformed YAML{where}: {_one_line(problem)}") from None
    except yaml.YAMLError as error:  # a reader error the check above did not foresee
        raise YamlError(f"{source}: malformed YAML: {_one_line(str(error))}") from None
    except RecursionError:
        raise YamlError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _one_line(text: str, limit: int = 100) -> str:
    """A parser's own words on one line, capped (they may quote a tag or a key of any length)."""
    text = _NOT_PRINTABLE.sub("?", " ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True)
class _Open:
    """A collection the parser is inside of (or the stream itself)."""

    anchor: str | None
    is_list: bool
    line: int
    items: int = 0
    values: int = 0  # everything within, each alias counted as a copy of its anchor


def _check_events(text: str, source: str, max_list: int | None) -> None:
    """Depth, list lengths and alias expansion from the parser's events, before anything is
    built: counts what each anchor would hold if every alias were a copy, and stops as soon as a
    limit is passed (a 120,000-value list is refused at its 10,001st value)."""
    frames = [_Open(None, False, 0)]
    anchored: dict[str, int] = {}
    added = 0
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.CollectionEndEvent):
            done = frames.pop()
            frames[-1].values += done.values + 1
            if done.anchor is not None:
                anchored[done.anchor] = done.values + 1
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        parent, line = frames[-1], _line(event.start_mark)
        parent.items += 1
        if max_list is not None and parent.is_list and parent.items > max_list:
            message = f"{source}: line {parent.line}: a list of more than {max_list:,} values"
            raise ListTooLong(message, parent.line)
        if isinstance(event, yaml.CollectionStartEvent):
            if len(frames) > MAX_DEPTH:
                raise YamlError(f"{source}: line {line}: nested deeper than {MAX_DEPTH} levels")
            is_list = isinstance(event, yaml.SequenceStartEvent)
            frames.append(_Open(event.anchor, is_list, line))
        elif isinstance(event, yaml.ScalarEvent):
            parent.values += 1
            if event.anchor is not None:
                anchored[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            anchor = event.anchor or ""
            if any(frame.anchor == anchor for frame in frames):
                raise YamlError(f"{source}: line {line}: alias *{anchor} refers to itself")
            size = anchored.get(anchor, 1)  # the composer reports an unknown anchor
            added += size
            if added > MAX_ALIAS_VALUES:
                raise YamlError(
                    f"{source}: line {line}: aliases expand to more than {MAX_ALIAS_VALUES:,} "
                    "values (an alias bomb?); write the values out"
                )
            parent.values += size


def _line(mark: object) -> int:
    """A parser mark's line, counted from 1 (0 if the parser gave none)."""
    line = getattr(mark, "line", None)
    return line + 1 if isinstance(line, int) else 0


def _check_duplicate_keys(root: Node, loader: _SafeLoader, source: str) -> None:
    """A key given twice in one mapping is an error naming it and both lines (YAML would keep
    the last one silently). `<<` merge keys may be overridden, as YAML intends."""
    walked: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in walked:  # an alias: walked where its anchor is
            continue
        walked.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend(
                (item, f"{path}[{i}]")
                for i, item in enumerate(node.value)
                if not isinstance(item, ScalarNode)
            )
        elif isinstance(node, MappingNode):
            lines: dict[object, int] = {}
            for key_node, value_node in node.value:
                label = "<<"
                if isinstance(key_node, ScalarNode) and key_node.tag != _MERGE_TAG:
                    key = loader.construct_object(key_node)
                    label = (
                        key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else shown(key)
                    )
                    line = _line(key_node.start_mark)
                    if key in lines:
                        raise YamlError(
                            f"{source}: {_join(path, label)}: duplicate key at line {line} "
                            f"(first at line {lines[key]}); give each key once"
                        )
                    lines[key] = line
                if not isinstance(value_node, ScalarNode):
                    stack.append((value_node, _join(path, label)))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _SafeLoader(_Base):  # type: ignore[valid-type,misc]
    """safe_load's loader, refusing numbers too long to be meant."""

    def construct_yaml_int(self, node: ScalarNode) -> int:
        self._refuse_long_number(node)
        number: int = super().construct_yaml_int(node)
        return number

    def construct_yaml_float(self, node: ScalarNode) -> float:
        self._refuse_long_number(node)
        number: float = super().construct_yaml_float(node)
        return number

    def construct_object(self, node: Node, deep: bool = False) -> object:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:  # e.g. a timestamp on 2024-13-45
            raise ConstructorError(
                None, None, f"cannot read {shown(node.value)}: {error}", node.start_mark
            ) from None

    @staticmethod
    def _refuse_long_number(node: ScalarNode) -> None:
        if len(node.value) > MAX_NUMBER_CHARS:
            raise ConstructorError(
                None,
                None,
                f"a number of {len(node.value):,} characters; at most {MAX_NUMBER_CHARS}",
                node.start_mark,
            )


_SafeLoader.add_constructor("tag:yaml.org,2002:int", _SafeLoader.construct_yaml_int)
_SafeLoader.add_constructor("tag:yaml.org,2002:float", _SafeLoader.construct_yaml_float)
