"""Replay's pure half: normalise recorded outputs and compare them with expectations.

`daemon.tools.replay` runs messages through a sandbox (the shell); this module only turns
bytes into stable, readable expectation files (signature values, digests, certificates,
generated ids, conversation ids and timestamps replaced by placeholders) and says, in
plain words, what changed between two decisions, settlements or files.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import re

from lxml import etree

from daemon.transport import mime
from daemon.transport.ebms import DS, EB

DECISION = "decision.json"
SETTLEMENT = "settlement"  # the folder of the batch (no message file has this name)
SETTLEMENT_JSON = "settlement.json"
DIFF_LINES = 80  # a unified diff longer than this is cut (the rest is counted)

Expectations = dict[str, dict[str, bytes]]  # folder → file name → bytes


# --------------------------------------------------------------------------- normalising

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_FIXED = {
    f"{{{DS}}}SignatureValue": "{sig}",
    f"{{{DS}}}DigestValue": "{digest}",
    f"{{{DS}}}X509Certificate": "{cert}",
    "{http://www.kith.no/xmlstds/apprec/2004-11-21}SoftwareVersion": "{version}",
}
_CONVERSATION = f"{{{EB}}}ConversationId"


class Placeholders:
    """Generated ids become `{id:N}`, numbered in order of appearance within one
    output: equal structure compares equal, and a reference to an id keeps its number."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def id(self, value: str) -> str:
        return self.seen.setdefault(value, f"{{id:{len(self.seen) + 1}}}")

    def sub(self, text: str) -> str:
        if _DATETIME.match(text.strip()):
            return "{time}"
        return _UUID.sub(lambda m: self.id(m.group(0).lower()), text)


def normalise_xml(data: bytes, ph: Placeholders) -> str:
    """Pretty XML with what must differ replaced: signature values, digests,
    certificates, our version, ids, conversation ids and timestamps."""
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    root = etree.fromstring(data, parser)
    for el in root.iter():
        if el.text is not None and el.text.strip():
            if el.tag in _FIXED:
                el.text = _FIXED[el.tag]
            elif el.tag == _CONVERSATION:
                el.text = ph.id(el.text.strip())
            else:
                el.text = ph.sub(el.text)
        if el.tail is not None and el.tail.strip():
            el.tail = ph.sub(el.tail)
        if isinstance(el.tag, str):
            for key, value in el.attrib.items():
                el.set(key, ph.sub(value))
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def normalise_output(prefix: str, raw: bytes) -> dict[str, bytes]:
    """One outbound ebMS message as readable files: `PREFIX.soap.xml` (the envelope),
    `PREFIX.payload.xml` (the payload, gunzipped), each opened by a comment naming the
    part. An encrypted payload cannot be read without the partner's key: a
    `PREFIX.payload.txt` names its type and size."""
    ph = Placeholders()
    multipart, problem = mime.parse(raw)
    if multipart is None:
        text = f"not a MIME message ({problem.text if problem else '?'})\n"
        return {f"{prefix}.txt": text.encode()}
    parts = [multipart.start, *multipart.attachments]
    out = {}
    for n, part in enumerate(parts, start=1):
        name = f"{prefix}.{'soap' if n == 1 else 'payload' if n == 2 else f'payload-{n - 1}'}"
        cid = ph.sub(part.content_id or "")
        head = f"{prefix} part {n} of {len(parts)}: {part.content_type}, Content-ID <{cid}>"
        data = part.data
        if part.content_type == "application/gzip":
            try:
                data = gzip.decompress(data)
                head += ", gunzipped"
            except (OSError, EOFError):
                pass
        try:
            text = normalise_xml(data, ph)
        except etree.XMLSyntaxError:
            what = "encrypted, not readable without the partner's key"
            if part.content_type != "application/pkcs7-mime":
                what = f"not XML, sha256 {hashlib.sha256(data).hexdigest()}"
            out[f"{name}.txt"] = f"{head}\n{{{what}: {len(data)} bytes}}\n".encode()
            continue
        comment = head.replace("--", "- -")
        out[f"{name}.xml"] = f"<!-- {comment} -->\n{text}".encode()
    return out


def kind_of(file_name: str) -> str:
    """apprec, ack or error: an outbox name is `<kind>-<id>.msg`."""
    return file_name.split("-", 1)[0]


_FOLD = str.maketrans({"æ": "ae", "ø": "o", "å": "a", "Æ": "AE", "Ø": "O", "Å": "A"})


def slug(text: str) -> str:
    """A payee as a stable file name: `RHF:Helse Sør-Øst RHF` → `RHF-Helse-Sor-Ost-RHF`."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text.translate(_FOLD)).strip("-") or "payee"


def dump_json(value: object) -> bytes:
    """Readable and stable: sorted keys, two-space indent, a trailing newline."""
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()


# --------------------------------------------------------------------------- comparing


def _rules(entries: list[dict]) -> set[str]:
    return {e["rule"] for e in entries}


def _delta(old: set[str], new: set[str]) -> str:
    moved = [f"+{r}" for r in sorted(new - old)] + [f"-{r}" for r in sorted(old - new)]
    return f" ({', '.join(moved)})" if moved else ""


def keyed(items: list[dict], key: str) -> dict[str, dict]:
    """By `key`, a repeated value numbered `#2`, `#3` (two bills with one regningNr)."""
    out: dict[str, dict] = {}
    for item in items:
        k, n = str(item.get(key)), 1
        while (k if n == 1 else f"{k}#{n}") in out:
            n += 1
        out[k if n == 1 else f"{k}#{n}"] = item
    return out


def state_of(item: dict | None) -> str:
    return "-" if item is None else f"{item['verdict']} {item['approved']}"


def _bill_rules(bill: dict | None) -> set[str]:
    if bill is None:
        return set()
    return _rules(bill["fired"]) | {r for line in bill["lines"] for r in _rules(line["fired"])}


def bill_changes(name: str, old: dict | None, new: dict | None) -> list[str]:
    """Bills whose verdict, amount or payee changed, line by line, with the rule ids
    that appeared (+) or disappeared (-), and remark texts that changed."""
    out = []
    old_bills = keyed((old or {}).get("bills", []), "regning_nr")
    new_bills = keyed((new or {}).get("bills", []), "regning_nr")
    for nr in [*old_bills, *(k for k in new_bills if k not in old_bills)]:
        a, b = old_bills.get(nr), new_bills.get(nr)
        delta = _delta(_bill_rules(a), _bill_rules(b))
        moved = a is not None and b is not None and None not in (a["payee"], b["payee"])
        moved = moved and a["payee"] != b["payee"]
        if a is None or b is None or state_of(a) != state_of(b) or moved:
            extra = f", payee {a['payee']} -> {b['payee']}" if moved else ""
            out.append(f"{name}: bill {nr}: {state_of(a)} -> {state_of(b)}{delta}{extra}")
        elif delta:
            out.append(f"{name}: bill {nr}: {state_of(b)}, rules{delta}")
        old_lines = keyed(a["lines"] if a else [], "line")
        new_lines = keyed(b["lines"] if b else [], "line")
        for n in [*old_lines, *(k for k in new_lines if k not in old_lines)]:
            x, y = old_lines.get(n), new_lines.get(n)
            line_delta = _delta(
                _rules(x["fired"]) if x else set(), _rules(y["fired"]) if y else set()
            )
            facts = ("verdict", "approved", "claimed", "category", "payee", "count", "code")
            if x is not None and y is not None and all(x[f] == y[f] for f in facts):
                if line_delta:
                    out.append(f"{name}: bill {nr} line {n} {y['code']}: rules{line_delta}")
                continue
            code = (y or x)["code"]
            extra = "".join(
                f", {f} {x[f]} -> {y[f]}"
                for f in ("category", "payee", "claimed")
                if x is not None
                and y is not None
                and x[f] != y[f]
                and (f != "payee" or None not in (x[f], y[f]))  # a rejected line pays nobody
            )
            change = f"{state_of(x)} -> {state_of(y)}{line_delta}{extra}"
            out.append(f"{name}: bill {nr} line {n} {code}: {change}")
        out += _remark_changes(name, nr, a, b)
    return out


def _remark_changes(name: str, nr: str, a: dict | None, b: dict | None) -> list[str]:
    def texts(bill: dict | None) -> dict[tuple, str]:
        return {(r["rule"], r["line"]): r["text"] for r in (bill or {}).get("remarks", [])}

    old, new = texts(a), texts(b)
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        if old.get(key) == new.get(key):
            continue
        where = f" line {key[1]}" if key[1] else ""
        if key not in new:
            out.append(f"{name}: bill {nr} remark {key[0]}{where} gone: {old[key]}")
        elif key not in old:
            out.append(f"{name}: bill {nr} remark {key[0]}{where} new: {new[key]}")
        else:
            out.append(f"{name}: bill {nr} remark {key[0]}{where}: {old[key]!r} -> {new[key]!r}")
    return out


def decision_changes(name: str, old: dict | None, new: dict | None) -> list[str]:
    """What changed in a message's decision, in a tester's words."""
    if old is None:
        return [f"{name}: no expectation (record one with --record)"]
    if new is None:
        return [f"{name}: expected, but not in this replay"]
    out = []
    if (old.get("outcome"), old.get("apprec_status")) != (
        new.get("outcome"),
        new.get("apprec_status"),
    ):
        out.append(
            f"{name}: {old.get('outcome')}, AppRec status {old.get('apprec_status')}"
            f" -> {new.get('outcome')}, AppRec status {new.get('apprec_status')}"
        )
    if old.get("same_as") != new.get("same_as"):
        out.append(f"{name}: duplicate of {old.get('same_as')} -> {new.get('same_as')}")

    def problems(d: dict) -> list[str]:
        return [
            f"{p['code']} {p['layer']} {p['location'] or '-'}: {p['text']}"
            for p in d.get("problems", [])
        ]

    old_p, new_p = problems(old), problems(new)
    out += [f"{name}: problem gone: {p}" for p in old_p if p not in new_p]
    out += [f"{name}: problem new: {p}" for p in new_p if p not in old_p]
    delta = _delta(_rules(old.get("claim_fired", [])), _rules(new.get("claim_fired", [])))
    if delta:
        out.append(f"{name}: claim rules{delta}")
    if old.get("outputs") != new.get("outputs"):
        out.append(f"{name}: outputs {old.get('outputs')} -> {new.get('outputs')}")
    return out + bill_changes(name, old, new)


def settlement_changes(old: dict | None, new: dict | None) -> list[str]:
    """Per payee: the total paid, and each line whose amount changed."""
    if old is None:
        return [f"{SETTLEMENT}: no expectation (record one with --record --settle)"]
    if new is None:
        return [f"{SETTLEMENT}: expected, but this replay did not settle (use --settle)"]
    out = []
    old_v = {v["payee"]: v for v in old["vedtak"]}
    new_v = {v["payee"]: v for v in new["vedtak"]}
    for payee in [*old_v, *(p for p in new_v if p not in old_v)]:
        a, b = old_v.get(payee), new_v.get(payee)
        if a is None or b is None or (a["approved"], a["bills"]) != (b["approved"], b["bills"]):
            was = f"{a['bills']} bills, paid {a['approved']}" if a else "no vedtak"
            now = f"{b['bills']} bills, paid {b['approved']}" if b else "no vedtak"
            out.append(f"{SETTLEMENT}: {payee}: {was} -> {now}")

        def lines(v: dict | None) -> dict[str, str]:
            return {
                f"{x['message']} bill {x['regning_nr']}": f"{x['verdict']} {x['approved']}"
                for x in (v or {}).get("lines", [])
            }

        la, lb = lines(a), lines(b)
        for key in [*la, *(k for k in lb if k not in la)]:
            if la.get(key) != lb.get(key):
                out.append(
                    f"{SETTLEMENT}: {payee}: {key}: {la.get(key, '-')} -> {lb.get(key, '-')}"
                )
    if old.get("not_settled") != new.get("not_settled"):
        out.append(
            f"{SETTLEMENT}: not settled {old.get('not_settled')} -> {new.get('not_settled')}"
        )
    return out


def _unified(folder: str, file: str, old: bytes | None, new: bytes | None) -> list[str]:
    a = (old or b"").decode("utf-8", "replace").splitlines()
    b = (new or b"").decode("utf-8", "replace").splitlines()
    lines = list(
        difflib.unified_diff(
            a, b, f"expected/{folder}/{file}", f"replay/{folder}/{file}", n=2, lineterm=""
        )
    )
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... {len(lines) - DIFF_LINES} more diff lines"]
    return [f"    {line}" for line in lines]


def compare(folder: str, expected: dict[str, bytes] | None, actual: dict[str, bytes] | None):
    """(passed, report lines) for one message folder: the decision's changes first,
    then a unified diff of every other normalised file that differs."""
    if expected == actual:
        return True, []
    summary_file = SETTLEMENT_JSON if folder == SETTLEMENT else DECISION

    def summary(files: dict[str, bytes] | None) -> dict | None:
        if files is None:
            return None
        try:
            return json.loads(files.get(summary_file, b"{}"))
        except ValueError:
            return {}

    old, new = summary(expected), summary(actual)
    if folder == SETTLEMENT:
        report = settlement_changes(old, new)
    else:
        report = decision_changes(folder, old, new)
    if expected is None or actual is None:
        return False, report
    names = sorted(set(expected) | set(actual))
    for file in names:
        if expected.get(file) == actual.get(file):
            continue
        if file == summary_file and report:
            continue  # already said in a tester's words
        if file not in actual or file not in expected:
            report.append(f"{folder}: {file} {'gone' if file not in actual else 'new'}")
            continue
        report += [
            f"{folder}: {file} differs:",
            *_unified(folder, file, expected.get(file), actual.get(file)),
        ]
    return False, report
