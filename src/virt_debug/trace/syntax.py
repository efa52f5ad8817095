"""Small scanners for the pieces of a strace record: results, fd decorations, strings.

They work on the raw text strace printed and never raise on odd input: a piece that
cannot be read comes back as ``None`` and the caller decides what that means.
"""

import re

# A -y/-yy decoration right after a number: "<...>" where brackets may hold "->"
# ("3<TCP:[127.0.0.1:80->10.0.0.1:5000]>") and backslash escapes are kept as printed.
_DECORATION = re.compile(r"<((?:[^<>\[\]\\]|\\.|\[[^\]]*\])*)>")
_DECORATION_END = re.compile(r">(?=[,)\]} (]|$)")
_NUMBER = re.compile(r"-?(?:0x[0-9a-fA-F]+|[0-9]+)")
_ERRNO = re.compile(r"\s*(E[A-Z0-9_]+|errno \d+) \((.*?)\)(?=\s|$)")
_NOTE = re.compile(r"\s*\((INJECTED|DELAYED)[^)]*\)\s*$")


def decoration_at(text: str, pos: int) -> tuple[str, int] | None:
    """The decoration starting at ``text[pos] == "<"``: (inside text, end index)."""
    m = _DECORATION.match(text, pos)
    if m is not None:
        return m.group(1), m.end()

    # Unbalanced brackets or a stray "<" in an old strace's unescaped path: fall back
    # to nesting on "<"/">" only, which is what the eye would do.
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "<":
            depth += 1
        elif c == ">":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : i], i + 1
        i += 1
    return None


def fd_decoration(text: str, pos: int) -> tuple[str, int] | None:
    """Like ``decoration_at``, with strace's ``(deleted)`` mark after it kept."""
    found = decoration_at(text, pos)
    if found is None:
        return None
    path, end = found

    # Old stracers did not escape ">" in paths: a decoration must be followed by the
    # end of the argument, else it goes on to a later ">" that is.
    if text[end : end + 1] not in ("", ",", ")", "]", " ", "(", "}"):
        for m in _DECORATION_END.finditer(text, end):
            path, end = text[pos + 1 : m.start()], m.start() + 1
            break
    if text.startswith("(deleted)", end):
        return path + " (deleted)", end + 9
    return path, end


def leading_int(text: str) -> tuple[int, int] | None:
    """The decimal (or 0x hex) number at the start of ``text`` and where it ends."""
    m = _NUMBER.match(text)
    if m is None:
        return None
    number = m.group()
    return int(number, 16) if "x" in number else int(number), m.end()


def parse_result(
    result: str,
) -> tuple[int | None, str | None, str | None, str | None]:
    """(retval, errno, errmsg, injected) of the text after " = "."""
    if result.isdecimal():
        return int(result), None, None, None

    injected = None
    note = _NOTE.search(result) if "ED)" in result else None
    while note is not None:
        text = note.group(0).strip()[1:-1]
        injected = text if injected is None else f"{text} {injected}"
        result = result[: note.start()]
        note = _NOTE.search(result)

    if result.startswith("?"):
        retval = None
        rest = result[1:]
    else:
        num = _NUMBER.match(result)
        if num is None:
            return None, None, None, injected
        text = num.group()
        retval = int(text, 16) if "x" in text else int(text)
        rest = result[num.end() :]
        if rest.startswith("<"):
            # The fd's decoration runs to the last ">" of the result text: errno
            # messages and notes never contain one, paths in old stracers may.
            close = rest.rfind(">")
            rest = rest[close + 1 :] if close > 0 else ""

    if retval is None or retval < 0:
        m = _ERRNO.match(rest)
        if m is not None:
            return retval, m.group(1), m.group(2), injected
    return retval, None, None, injected


def first_quoted(text: str) -> str | None:
    """Contents of the first double-quoted string of ``text``, escapes kept."""
    start = text.find('"')
    if start < 0:
        return None

    # Jump from quote to quote (str.find, not a loop per character): a quote ends
    # the string unless an odd run of backslashes escapes it. Each run is counted
    # once, so the scan stays linear on a line of megabytes.
    end = text.find('"', start + 1)
    while end >= 0:
        slashes = 0
        while text[end - 1 - slashes] == "\\":
            slashes += 1
        if not slashes % 2:
            return text[start + 1 : end]
        end = text.find('"', end + 1)
    return None


def split_args(text: str, limit: int = 8) -> list[str]:
    """The top-level comma-separated arguments (at most ``limit``, rest unsplit)."""
    out: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(text)
    while i < n and len(out) < limit:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "<" and i and text[i - 1].isalnum():
            found = decoration_at(text, i)
            if found is not None:
                i = found[1]
                continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
        i += 1
    tail = text[start:].strip()
    if tail or out:
        out.append(tail)
    return out


def matching_paren(text: str, start: int) -> int:
    """Index of the ")" closing the "(" at ``text[start]``, or -1."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "<" and i and text[i - 1].isalnum():
            found = decoration_at(text, i)
            if found is not None:
                i = found[1]
                continue
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0:
                return i if c == ")" else -1
        i += 1
    return -1
