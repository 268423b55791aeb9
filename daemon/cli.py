"""`kravmottak [--config PATH] COMMAND` — one CLI for operators and testers."""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from daemon import config, files, logs
from daemon.config import ConfigError, Settings
from daemon.registers import import_guard, registry
from daemon.registers.rhf import valid_orgnr
from daemon.transport import keys

# exit codes (README "Operations"): 0 ok, 1 the work found problems, 2 usage or configuration
OK, PROBLEMS, USAGE = 0, 1, 2


class UsageError(Exception):
    """A wrong argument: the message says which and why (exit 2)."""


def _settings(args: argparse.Namespace) -> Settings:
    return config.load(config.config_path(args.config))


# --------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    cfg = root / "kravmottak.toml"
    if root.exists() and not root.is_dir():
        print(f"kravmottak: {root} is a file, not a folder: give a new folder", file=sys.stderr)
        return 2
    if cfg.exists() and not args.force:
        print(f"kravmottak: {cfg} exists already (use --force to overwrite)", file=sys.stderr)
        return 2
    root.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config.sandbox_config_text(args.her_id), encoding="utf-8")
    settings = config.load(cfg)
    files.ensure_folders(settings.paths)
    from daemon.ledger.backends import open_ledger

    open_ledger(settings).close()
    for path, empty in (
        (settings.paths.partners, "partner"),
        (settings.paths.institutions, "institution"),
    ):
        if not path.exists():
            path.write_text(f"# {empty} entries: see `kravmottak {empty} add --help`\n")
    keys.generate(
        settings.paths.private_key,
        settings.paths.certificate,
        her_id=settings.party.her_id,
        orgnr=settings.party.orgnr,
        name=settings.party.name,
    )
    keys.patient_secret(settings.paths.patient_secret)  # made here, mode 0600
    print(cfg)
    return 0


HER_ID = re.compile(r"^[1-9][0-9]{0,8}$")  # the health network's HER-ids: up to 9 digits
CPA_ID = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def cmd_rekey_patients(args: argparse.Namespace) -> int:
    """Issue #14 finding 11: replace the ledger's unkeyed patient pseudonyms by the
    HMAC under [keys] patient_secret, using the archived originals."""
    from daemon.tools.rekey import rekey

    done = rekey(_settings(args), drop_unmapped=args.drop_unmapped)
    print(
        f"re-keyed {done.rekeyed} patient pseudonym(s); {done.unmapped} found in no archived "
        f"message ({done.dropped} cleared); {done.rows} ledger row(s) changed"
    )
    return 0


def cmd_partner_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not HER_ID.match(args.her_id or ""):
        raise UsageError(f"--her-id {args.her_id!r} is not a HER-id (1 to 9 digits)")
    if not CPA_ID.match(args.cpa_id or ""):
        raise UsageError(f"--cpa-id {args.cpa_id!r}: give the CPAId, printable, without spaces")
    if args.orgnr is not None and not valid_orgnr(args.orgnr):
        raise UsageError(f"--orgnr {args.orgnr!r} is not an organisation number (9 digits, mod 11)")
    certs = tuple(str(Path(c).resolve()) for c in args.certificate or ())
    now = datetime.now(UTC)
    for path in certs:  # refuse a file that is not a certificate before saving anything
        try:
            loaded = keys.load_certificates(Path(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--certificate {path}: {exc}") from exc
        for cert in loaded:
            if cert.not_valid_after_utc < now:
                text = f"--certificate {path}: EXPIRED on {cert.not_valid_after_utc:%Y-%m-%d}"
                if not args.force:
                    raise UsageError(f"{text}; nothing saved (--force to register it anyway)")
                print(f"kravmottak: WARNING: {text}; registered anyway (--force)", file=sys.stderr)
    partner = registry.Partner(
        her_id=args.her_id,
        cpa_id=args.cpa_id,
        orgnr=args.orgnr,
        name=args.name,
        certificates=certs,
        require_signature=args.require_signature,
        encrypts_to_us=args.encrypts_to_us,
        encrypt=args.encrypt,
        compress=args.compress,
        actions=tuple(registry.action_pair(a) for a in args.action or ())
        or registry.DEFAULT_ACTIONS,
    )
    registry.upsert_partner(settings.paths.partners, partner)
    print(f"partner HER {partner.her_id} / CPA {partner.cpa_id} saved in {settings.paths.partners}")
    return 0


def cmd_partner_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = [("HER", "CPA", "ORGNR", "NAME", "SIGN", "IN/OUT ENC", "CERTIFICATES")]
    broken = []
    for p in registry.load_partners(settings.paths.partners):
        rows.append(
            (
                p.her_id,
                p.cpa_id,
                p.orgnr or "-",
                p.name or "-",
                "required" if p.require_signature else "optional",
                f"{'yes' if p.encrypts_to_us else 'no'}/{'yes' if p.encrypt else 'no'}",
                f"BROKEN: {p.broken}"
                if p.broken
                else "; ".join(keys.describe(c) for c in p.certs) or "-",
            )
        )
        broken += [p] if p.broken else []
    _table(rows)
    for p in broken:
        print(
            f"kravmottak: partner HER {p.her_id} / CPA {p.cpa_id} is broken ({p.broken}):"
            " its messages are refused retryably; repair with `partner add` or `partner remove`",
            file=sys.stderr,
        )
    return 1 if broken else 0


def cmd_partner_remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    gone = registry.remove_partner(settings.paths.partners, args.her_id, args.cpa_id)
    if not gone:
        what = f"HER {args.her_id}" + (f" / CPA {args.cpa_id}" if args.cpa_id else "")
        raise UsageError(f"no partner {what} in {settings.paths.partners}; nothing removed")
    for p in gone:
        print(f"partner HER {p.her_id} / CPA {p.cpa_id} removed from {settings.paths.partners}")
    return 0


def _rhf_names(settings: Settings) -> list[str]:
    """The RHF table in force (the state folder's import, or the shipped one)."""
    from daemon.registers import tariffs

    try:
        return [r.name for r in tariffs.load(settings.paths.tariffs).rhf.rhfs]
    except tariffs.TariffError as exc:
        raise ConfigError(f"the RHF table cannot be read: {exc}") from exc


def _checked_institution(args: argparse.Namespace, settings: Settings) -> registry.Institution:
    """`institution add`'s arguments as an Institution, each checked: the organisation
    number (9 digits, mod 11), the name, the RHF against the RHF table (short names
    such as "Helse Sør-Øst" are aliases), ownership and services."""
    from daemon.registers.rhf import valid_orgnr

    orgnr = args.orgnr.strip()
    if not valid_orgnr(orgnr):
        raise ConfigError(f"--orgnr {args.orgnr!r} is not a valid organisation number (mod 11)")
    if not registry.valid_name(args.name):
        raise ConfigError("--name must be printable text, not blank, at most 200 characters")
    ownership = args.ownership
    rhf = ""
    if args.rhf:
        names = _rhf_names(settings)
        rhf = registry.rhf_named(names, args.rhf) or ""
        if not rhf:
            raise ConfigError(f"--rhf {args.rhf!r} is not in the RHF table; valid: {names}")
    if ownership in ("rhf", "driftsavtale") and not rhf:
        raise ConfigError(f"--ownership {ownership} needs --rhf (the RHF it belongs to)")
    if ownership == "state" and rhf:
        raise ConfigError("--ownership state: an institution outside the RHFs has no --rhf")
    services = tuple(dict.fromkeys(args.service or ["lab", "radiology"]))
    return registry.Institution(
        orgnr, args.name.strip(), rhf, ownership, services, (), tuple(args.sender or ())
    )


def cmd_institution_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    inst = _checked_institution(args, settings)
    path = settings.paths.institutions
    old = next((i for i in registry.load_institutions(path) if i.orgnr == inst.orgnr), None)
    if old is not None:  # replacing an entry keeps its units and account
        inst = registry.Institution(
            inst.orgnr, inst.name, inst.rhf, inst.ownership, inst.services, old.units,
            inst.senders, old.account,
        )  # fmt: skip
    registry.upsert_institution(path, inst)
    print(f"institution {inst.orgnr} saved in {path}")
    return 0


def cmd_institution_remove(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not registry.remove_institution(settings.paths.institutions, args.orgnr):
        print(f"kravmottak: institution {args.orgnr} is not registered", file=sys.stderr)
        return 1
    print(f"institution {args.orgnr} removed from {settings.paths.institutions}")
    return 0


def cmd_institution_unit(args: argparse.Namespace) -> int:
    """Register (or with --remove, forget) one unit's own services."""
    settings = _settings(args)
    path = settings.paths.institutions
    found = registry.load_institutions(path)
    inst = next((i for i in found if i.orgnr == args.orgnr), None)
    if inst is None:
        print(f"kravmottak: institution {args.orgnr} is not registered", file=sys.stderr)
        return 1
    kept = tuple(u for u in inst.units if u.resh != args.resh)
    if args.remove:
        if len(kept) == len(inst.units):
            print(f"kravmottak: {args.orgnr} has no unit {args.resh}", file=sys.stderr)
            return 1
        units = kept
    else:
        if not args.service:
            raise ConfigError("institution unit: give --service (repeatable) or --remove")
        unit = registry.Unit(args.resh, tuple(dict.fromkeys(args.service)), args.name or "")
        units = (*kept, unit)
    from dataclasses import replace

    registry.upsert_institution(path, replace(inst, units=units))
    print(f"institution {args.orgnr} unit {args.resh} {'removed' if args.remove else 'saved'}")
    return 0


def cmd_institution_migrate(args: argparse.Namespace) -> int:
    """Rewrite an institutions.toml in the old form (`kinds`) with ownership and services."""
    settings = _settings(args)
    path = settings.paths.institutions
    if not registry.needs_migration(path):
        print(f"{path}: nothing to migrate")
        return 0
    found = registry.load_institutions(path)
    registry.save_institutions(path, found)
    for i in found:
        print(f"{i.orgnr} {i.name}: ownership {i.ownership}, services {','.join(i.services)}")
    return 0


def cmd_institution_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = [("ORGNR", "NAME", "RHF", "OWNERSHIP", "SERVICES", "UNITS")]
    for i in registry.load_institutions(settings.paths.institutions):
        units = "; ".join(f"{u.resh}:{','.join(u.services)}" for u in i.units) or "-"
        rows.append((i.orgnr, i.name, i.rhf or "-", i.ownership, ",".join(i.services), units))
    _table(rows)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.service import runner as service

    settings = _settings(args)
    if args.worker_id:
        settings = dataclasses.replace(
            settings, worker=dataclasses.replace(settings.worker, id=args.worker_id)
        )
    logs.configure(settings.log_level)
    return service.run(settings)


def cmd_process(args: argparse.Namespace) -> int:
    from daemon.ledger import backends
    from daemon.service import lock, workers
    from daemon.service import runner as service

    settings = _settings(args)
    logs.configure(settings.log_level)
    with lock.hold(settings):
        intake = service.build(settings)
        worker = None
        if not backends.is_sqlite(settings):  # workers may be running: be one of them
            worker = workers.Worker(settings, intake.ledger)
            worker.start()
            worker.keep_beating()
            intake.worker = worker
        try:
            recovered = intake.recover()
            handled = intake.drain()
            stuck = intake.undelivered()
            receipts = [intake.ledger.receipt(p.name) for p in intake.in_work()]
            failed = sum(1 for r in receipts if r is None or r.state == "claimed")
        finally:
            if worker is not None:
                worker.stop()
            intake.ledger.close()
    print(f"recovered {recovered}, processed {handled}")
    problems = []
    if stuck.answers:
        problems.append(f"{stuck.answers} answer(s) recorded but not delivered to the outbox")
    if stuck.vedtak:
        problems.append(f"{stuck.vedtak} vedtak recorded but not delivered to the outbox")
    if failed:
        problems.append(f"{failed} file(s) could not be handled")
    if problems:
        print(
            f"kravmottak: {'; '.join(problems)}; they wait in work/ and are retried by the next"
            " `process` or by the running daemon (see the log on stderr)",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_settle(args: argparse.Namespace) -> int:
    """One settlement batch now (or up to --cutoff): a vedtak per payee in the outbox."""
    from daemon.service import runner as service
    from daemon.settlement import settle

    settings = _settings(args)
    logs.configure(settings.log_level)
    intake = service.build(settings)
    try:
        now = intake.clock()
        cutoff = now
        if args.cutoff:
            try:
                cutoff = datetime.fromisoformat(args.cutoff.replace("Z", "+00:00"))
            except ValueError:
                print(f"kravmottak: --cutoff {args.cutoff!r} is not ISO 8601", file=sys.stderr)
                return 2
            if cutoff.tzinfo is None:
                cutoff = cutoff.replace(tzinfo=settle.Calendar.from_settings(settings).zone)
            if cutoff > now:  # a vedtak dated in the future would pay claims not yet made
                print(
                    f"kravmottak: --cutoff {cutoff.isoformat()} is in the future (now is"
                    f" {now.isoformat()}); nothing settled",
                    file=sys.stderr,
                )
                return 2
        settle.deliver(intake)  # whatever an earlier run recorded but did not write
        result = settle.settle(intake, cutoff=cutoff, kind="manual")
        last = intake.ledger.last_settlement()
    finally:
        intake.ledger.close()
    print(f"settlement run {result.run}: {result.vedtak} vedtak, up to {cutoff.isoformat()}")
    for v in last["vedtak"] if last and result.vedtak else []:
        print(f"  {v['oppgjors_nr']}  {v['payee']}: {v['bills']} bills, paid {v['approved']:.2f}")
    for h in result.held:
        who = h.payee or "(no payee)"
        print(f"  HELD {who}: {h.payments} payments, {h.approved:.2f} kr: {h.reason}")
    if result.held:
        print(
            f"kravmottak: payments of {len(result.held)} payee(s) are held and were not paid;"
            " see `kravmottak payments held`, repair the payee or"
            " `kravmottak payments repoint --from PAYEE --to PAYEE`",
            file=sys.stderr,
        )
        return 1
    return 0


def _held(settings: Settings):
    """The held payments, from the ledger (read-only) with the tariffs' RHF table and
    the registry the daemon would use."""
    from daemon.ledger.backends import open_ledger
    from daemon.service import runner as service
    from daemon.settlement import settle

    ledger = open_ledger(settings, readonly=True)
    try:
        if not any(t.payee or t.approved for t in ledger.open_by_payee()):
            return []  # nothing open that could be held: no need to load the tariffs
        tables = service.load_tariffs(settings.paths.tariffs)
        loaded = registry.Registry(
            registry.load_partners(settings.paths.partners),
            registry.load_institutions(settings.paths.institutions),
        )
        return settle.held(ledger, tables, loaded)
    finally:
        ledger.close()


def cmd_payments_held(args: argparse.Namespace) -> int:
    """Open payments no batch can pay, per payee, with the reason. Exit 1 when any."""
    found = _held(_settings(args))
    if args.json:
        print(json.dumps([h.as_dict() for h in found], indent=2, ensure_ascii=False))
        return 1 if found else 0
    if not found:
        print("no payments held")
        return 0
    rows = [("PAYEE", "PAYMENTS", "KRONER", "SINCE", "REASON")]
    for h in found:
        rows.append((h.payee or "(none)", str(h.payments), f"{h.approved:.2f}", h.since, h.reason))
    _table(rows)
    return 1


def cmd_payments_repoint(args: argparse.Namespace) -> int:
    """Move the open payments of one payee to another, with an audit row in the ledger."""
    from daemon.ledger.backends import open_ledger
    from daemon.service import runner as service
    from daemon.settlement import settle

    settings = _settings(args)
    if args.from_payee == args.to_payee:
        raise UsageError("--from and --to name the same payee")
    tables = service.load_tariffs(settings.paths.tariffs)
    loaded = registry.Registry(
        registry.load_partners(settings.paths.partners),
        registry.load_institutions(settings.paths.institutions),
    )
    if settle.payee_of(args.to_payee, tables, loaded) is None:
        raise UsageError(
            f"--to {args.to_payee}: {settle.why_unaddressable(args.to_payee, tables, loaded)}"
        )
    who = os.environ.get("SUDO_USER") or getpass.getuser()
    ledger = open_ledger(settings)
    try:
        moved, kroner = ledger.repoint(
            args.from_payee,
            args.to_payee,
            by=who,
            now=datetime.now(UTC).isoformat(),  # the audit: when it was really done
            reason=args.reason,
        )
    finally:
        ledger.close()
    if not moved:
        raise UsageError(f"no open payments to {args.from_payee}; nothing moved")
    print(
        f"{moved} open payment(s), {kroner:.2f} kr, moved from {args.from_payee} to"
        f" {args.to_payee} (recorded in the ledger as done by {who})"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from daemon.tools.checkfile import check_file

    settings = _settings(args)
    if not Path(args.file).is_file():
        print(f"kravmottak: no such file: {args.file}", file=sys.stderr)
        return 2
    problems = check_file(Path(args.file), settings)
    for p in problems:
        print(f"{p.code} {p.where()}: {p.text}")
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("valid")
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    """The remark list, generated from the rule registry (the README embeds it)."""
    from daemon.rules.decide import RULEBOOK

    print("| number | rule | scope | text to the sender | source |")
    print("|---|---|---|---|---|")
    for fn in sorted(RULEBOOK.all, key=lambda f: f.rule.number):
        r = fn.rule
        print(f"| {r.number} | {r.id} | {r.scope} | {r.text} | {r.source} |")
    print()
    try:
        choices, where = _settings(args).rules, "as configured"
    except ConfigError:  # no config at hand: the defaults
        from daemon.rule_settings import RuleSettings

        choices, where = RuleSettings(), "defaults (no config found)"
    print(f"Choices ([rules] in the config; README 'Rule choices'), {where}:")
    print()
    print("| key | value |")
    print("|---|---|")
    for key, value in choices.described():
        print(f"| `{key}` | `{value}` |")
    return 0


# trace inputs of the same-day rules (RAD-06..10), shown one per line by `explain`
SAME_DAY_KEYS = {
    "exam": "this exam",
    "other": "against",
    "earlier": "approved earlier",
    "this_message": "in this message",
}


def cmd_explain(args: argparse.Namespace) -> int:
    """Why did a message get the answer it got: bills, lines, rules that fired, amounts."""
    from daemon.ledger.backends import open_ledger

    settings = _settings(args)
    ledger = open_ledger(settings, readonly=True)
    try:
        found = ledger.explain(args.message_id)
    finally:
        ledger.close()
    if not found:
        print(f"no message with MessageId or MsgId {args.message_id}", file=sys.stderr)
        return 1
    for m in found:
        print(
            f"message {m['ebxml_message_id']} (MsgId {m['msghead_id']}) from HER {m['sender_her']}"
            f": {m['state']}, AppRec status {m['apprec_status']}, {m['processed_at']}"
        )
        for p in m["problems"]:
            print(f"  refused: {p['code']} {p['layer']} {p['location']}: {p['text']}")
        fired: dict[tuple[str, int], list[str]] = {}
        context: dict[tuple[str, int], list[str]] = {}
        for rule_id, regning_nr, line, _hit, inputs in m["trace"]:
            seen = ",".join(f"{k}={v}" for k, v in inputs if k not in SAME_DAY_KEYS)
            fired.setdefault((regning_nr, line), []).append(f"{rule_id}({seen})")
            context.setdefault((regning_nr, line), []).extend(
                f"{rule_id} {SAME_DAY_KEYS[k]}: {v}" for k, v in inputs if k in SAME_DAY_KEYS
            )
        for b in m["bills"]:
            print(
                f"  bill {b['regning_nr']} (type {b['transaction_type']}, uuid {b['uuid']}):"
                f" {b['verdict']}, claimed {b['claimed']}, approved {b['approved']}"
                + (f", paid to {b['payee']}" if b["payee"] else "")
            )
            print(f"    bill rules fired: {' '.join(fired.get((b['regning_nr'], 0), [])) or '-'}")
            for line, code, count, category, claimed, approved, verdict in b["lines"]:
                rules = " ".join(fired.get((b["regning_nr"], line), [])) or "-"
                print(
                    f"    line {line}: {code} x{count} [{category or '-'}] claimed {claimed}"
                    f" approved {approved} {verdict}  fired: {rules}"
                )
                for seen in dict.fromkeys(context.get((b["regning_nr"], line), [])):
                    print(f"      same day, {seen}")
            for rule_id, number, text, line in b["remarks"]:
                where = f" line {line}" if line else ""
                print(f"    remark {number} {rule_id}{where}: {text}")
            for year, amount, status, active in b.get("egenandeler", ()):
                gone = "" if active else " (replaced by a correction or credit)"
                print(f"    egenandel {year}: {status} {amount}{gone}")
        print(f"  {m['rules_run']} rule evaluations, {len(m['trace'])} fired")
    return 0


def cmd_wrap(args: argparse.Namespace) -> int:
    from daemon.tools.wrap import wrap

    source, out = Path(args.msghead), Path(args.output)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    if not out.is_dir() and (args.output.endswith(("/", os.sep)) or out.suffix != ".msg"):
        raise UsageError(f"{out}: no such folder (to write a file, give a name ending in .msg)")
    if not out.is_dir() and not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder")
    raw = wrap(
        source.read_bytes(),
        from_her=args.from_her,
        cpa_id=args.cpa_id,
        to_her=args.to_her,
        message_id=args.message_id,
        ack_requested=args.ack,
        gzip=args.gzip,
    )
    if out.is_dir():  # drop into a folder (e.g. the inbox) the way a sender must
        out = out / f"{Path(args.msghead).stem}.msg"
    files.write_atomic(out, raw)
    print(out)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Recorded messages through the whole pipeline in a throw-away sandbox."""
    from daemon.tools import replay

    return replay.command(args, _settings(args))


def cmd_status(args: argparse.Namespace) -> int:
    """The figures from the ledger (opened read-only), the folders and the running
    daemon's /metrics; `--json`: the same figures for monitoring scripts."""
    settings = _settings(args)
    figures = status_figures(settings)
    if args.json:
        print(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
        return 0
    q, u = figures["queue"], figures["undelivered"]
    rows = [("WHAT", "COUNT")]
    rows.append(("inbox (received, ready)", str(q["inbox_ready"])))
    rows.append(("inbox (still being written)", str(q["inbox_settling"])))
    rows.append(("inbox (never claimed: directories)", str(q["inbox_never_claimed"])))
    rows.append(("work (claimed, in hand)", str(q["work"])))
    for key in ("claimed", "answered", "quarantined", "duplicates", "messages"):
        rows.append((f"ledger {key}", str(figures["ledger"][key])))
    rows.append(("oldest unanswered", figures["oldest_unanswered"] or "-"))
    since = f", oldest since {u['answers_since']}" if u["answers_since"] else ""
    rows.append(("UNDELIVERED answers" if u["answers"] else "undelivered answers",
                 f"{u['answers']}{since}"))  # fmt: skip
    if u["vedtak"]:
        rows.append(("UNDELIVERED vedtak", f"{u['vedtak']}, since {u['vedtak_since']}"))
    _table(rows)
    _held_status(figures)
    for p in figures["partners_broken"]:
        print(f"\nBROKEN partner HER {p['her_id']} / CPA {p['cpa_id']}: {p['reason']}")
    _settlement_status(figures["settlement"])
    _workers_status(figures)
    _running_daemon_status(settings)
    return 0


def status_figures(settings: Settings) -> dict:
    """Everything `status` shows, as plain data (what `status --json` prints)."""
    from daemon.ledger.backends import open_ledger
    from daemon.settlement import settle

    ledger = open_ledger(settings, readonly=True)
    try:
        counts = ledger.counts()
        oldest = ledger.oldest_unanswered()
        work = [p.name for p in _listing(settings.paths.work) if not p.name.startswith(".")]
        stuck = ledger.undelivered_outputs(work)
        last = ledger.last_settlement()
        known_workers = ledger.workers()
    finally:
        ledger.close()
    strays: list[str] = []  # what scan never claims: directories in the inbox
    inbox, settling = files.scan(settings.paths.inbox, settings.intake, strays=strays)
    if inbox:  # a ready file in the inbox is unanswered too, and older than any claim
        first = datetime.fromtimestamp(min(c.mtime for c in inbox), UTC).isoformat()
        oldest = min(oldest, first) if oldest else first
    now = service_clock(settings)()
    try:
        held = [h.as_dict() for h in _held(settings)]
        held_error = None
    except ConfigError as exc:
        held, held_error = [], str(exc)
    try:
        partners = registry.load_partners(settings.paths.partners)
    except ConfigError:
        partners = ()  # a broken file: `partner list` says what
    calendar = settle.Calendar.from_settings(settings)
    upcoming = calendar.next_run(now)
    ledger_counts = dict(counts)
    # an answer recorded but still in work/ is not answered to the sender yet
    ledger_counts["answered"] -= stuck.answered
    ledger_counts["quarantined"] -= stuck.answers - stuck.answered
    return {
        "config": str(settings.source),
        "now": now.isoformat(),
        "queue": {
            "inbox_ready": len(inbox),
            "inbox_settling": settling,
            "inbox_never_claimed": len(strays),
            "work": len(work),
        },
        "ledger": ledger_counts,
        "oldest_unanswered": oldest,
        "undelivered": {
            "answers": stuck.answers,
            "answers_since": stuck.answers_since,
            "answers_age_seconds": _age(now, stuck.answers_since),
            "vedtak": stuck.vedtak,
            "vedtak_since": stuck.vedtak_since,
        },
        "held_payments": held,
        "held_payments_error": held_error,
        "workers": [_worker_figures(w) for w in known_workers],
        "partners_broken": [
            {"her_id": p.her_id, "cpa_id": p.cpa_id, "reason": p.broken}
            for p in partners
            if p.broken
        ],
        "settlement": {
            "next": upcoming.isoformat() if upcoming else None,
            "last": {
                **{k: last[k] for k in ("id", "kind", "cutoff", "started_at")},
                "vedtak": [
                    {**v, "claimed": str(v["claimed"]), "approved": str(v["approved"])}
                    for v in last["vedtak"]
                ],
            }
            if last
            else None,
        },
    }


def _worker_figures(row: dict) -> dict:
    """A worker of the ledger as `status` shows it: its heartbeat's age (real time, not
    a rehearsal's fixed clock) and its lease: live, expired (dead or paused: its files
    are taken over), taken (over by another), stopped."""
    real_now = datetime.now(UTC)
    lease = row["state"]
    if lease == "running":
        lease = (
            "live"
            if row["lease_until"] >= real_now.isoformat(timespec="microseconds")
            else "expired"
        )
    return {
        "id": row["worker_id"],
        "host": row["host"],
        "pid": row["pid"],
        "started": row["started"],
        "heartbeat_age_seconds": _age(real_now, row["heartbeat"]),
        "lease": lease,
        "files_held": row["held"],
    }


def _workers_status(figures: dict) -> None:
    if not figures["workers"]:
        return
    print()
    rows = [("WORKERS", "HOST", "PID", "HEARTBEAT", "LEASE", "FILES HELD")]
    for w in figures["workers"]:
        age = w["heartbeat_age_seconds"]
        rows.append((w["id"], w["host"], str(w["pid"]), "-" if age is None else f"{age:.0f} s ago",
                     w["lease"], str(w["files_held"])))  # fmt: skip
    _table(rows)


def _listing(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _age(now: datetime, since: str | None) -> float | None:
    if not since:
        return None
    return max(0.0, (now - datetime.fromisoformat(since)).total_seconds())


def _held_status(figures: dict) -> None:
    if figures["held_payments_error"]:
        print(f"\nHELD payments: cannot tell ({figures['held_payments_error']})")
    if not figures["held_payments"]:
        return
    print()
    rows = [("HELD PAYMENTS", "PAYMENTS", "KRONER", "REASON")]
    for h in figures["held_payments"]:
        rows.append((h["payee"] or "(none)", str(h["payments"]), h["approved"], h["reason"]))
    _table(rows)


def _running_daemon_status(settings) -> None:
    """The running daemon's own figures, scraped from its /metrics (when it answers)."""
    from daemon.service import metrics

    m = settings.metrics
    text = metrics.fetch(m.host, m.port) if m.enabled and m.port else None
    print()
    if text is None:
        where = f"{m.host}:{m.port}" if m.enabled and m.port else "metrics off or on a free port"
        _table([("DAEMON", ""), ("metrics", f"no answer ({where})")])
        return
    _table([("DAEMON (live, from /metrics)", ""), *metrics.status_rows(text)])


def _settlement_status(settlement: dict) -> None:
    """The next batch, the last one and its totals per payee."""
    last = settlement["last"]
    print()
    rows = [("SETTLEMENT", "")]
    rows.append(("next batch", settlement["next"] or "-"))
    if last is None:
        rows.append(("last batch", "never"))
    else:
        rows.append(("last batch", f"{last['kind']} run {last['id']}, up to {last['cutoff']}"))
    _table(rows)
    if last and last["vedtak"]:
        vrows = [("PAYEE", "OPPGJORSNR", "BILLS", "CLAIMED", "PAID", "DELIVERED")]
        for v in last["vedtak"]:
            vrows.append((
                v["payee"], v["oppgjors_nr"], str(v["bills"]), f"{Decimal(v['claimed']):.2f}",
                f"{Decimal(v['approved']):.2f}", "yes" if v["delivered"] else "no",
            ))  # fmt: skip
        total = sum(Decimal(v["approved"]) for v in last["vedtak"])
        vrows.append(("total", "", str(sum(v["bills"] for v in last["vedtak"])), "",
                      f"{total:.2f}", ""))  # fmt: skip
        _table(vrows)


def service_clock(settings):
    from daemon.service import runner as service

    return service.clock_for(settings)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# ---- tariffs: `tariff import` and `tariff show` (daemon/tariffs.py, daemon/tariff_import.py,
# daemon/radiology_tariffs.py, daemon/radiology_import.py)


def cmd_tariff_import(args: argparse.Namespace) -> int:
    from daemon.registers import tariff_import, tariffs

    target = Path(args.target) if args.target else _settings(args).paths.tariffs
    rates = Path(args.rates) if args.rates else None
    if args.kind == "radiologi":
        return _import_radiology(args, target, rates)
    if args.kind == "egenandel":
        return _import_egenandel(args, target)
    radiology_only = [
        option
        for option, given in (
            ("--addons", args.addons),
            ("--example-categories", args.example_categories),
            ("--valid-from", args.valid_from),
        )
        if given
    ]
    if radiology_only:
        print(
            f"kravmottak: {', '.join(radiology_only)}: only with --kind radiologi", file=sys.stderr
        )
        return 2

    def load_side(folder: Path):
        texts = [_text(folder / name) for name in (tariffs.CODES_FILE, tariffs.RATES_FILE)]
        loaded = tariffs.parse(*texts, str(folder))
        return import_guard.side(
            ((c, v.category) for c, v in loaded.codes.items()),
            ((r.category, r.sector, r.valid_from) for r in loaded.rates),
        )

    return _guarded_import(
        args,
        target,
        (tariffs.CODES_FILE, tariffs.RATES_FILE),
        lambda staging, current: tariff_import.import_nlk(Path(args.file), rates, staging, current),
        load_side,
    )


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _guarded_import(args, target: Path, names: tuple[str, ...], run, load_side) -> int:
    """Import into a staging folder, compare with what is in force, and put the files
    in force only when the import is safe (`import_guard`) or `--force` is given;
    `--dry-run` prints the report and writes nothing. Exit 1 when refused."""
    from daemon.registers import tariffs
    from daemon.registers.tariff_import import write_files
    from daemon.registers.tariff_table import TariffError

    try:
        share = import_guard.parse_share(args.max_removed)
    except ValueError as exc:
        raise UsageError(f"--max-removed: {exc}") from None
    current = tariffs.in_force(target, names)
    staging_parent = target.parent if target.parent.is_dir() else None
    staging = Path(tempfile.mkdtemp(prefix=".tariff-import-", dir=staging_parent))
    try:
        try:
            report = run(staging, current)
            exists = any((current / n).is_file() for n in names)
            old = load_side(current) if exists else None
            new = load_side(staging)
        except TariffError as exc:
            print(f"kravmottak: tariff import refused, nothing written: {exc}", file=sys.stderr)
            return 1
        report = dataclasses.replace(report, target=str(target), written=())
        lines = report.summary().splitlines()
        print("\n".join(x for x in lines if not x.startswith(("Written to", "Nothing to write"))))
        unsafe = import_guard.findings(old, new, share)
        for finding in unsafe:
            print(f"UNSAFE: {finding}")
        if args.dry_run:
            print(f"Dry run: nothing written to {target}")
            return 1 if unsafe else 0
        if unsafe and not args.force:
            print(
                f"kravmottak: tariff import refused, nothing written: {'; '.join(unsafe)}."
                " If the file is right, run again with --force (see the report with --dry-run)",
                file=sys.stderr,
            )
            return 1
        written = write_files(
            target, {n: _text(staging / n) for n in names if (staging / n).is_file()}
        )
        if written:
            print(f"Written to {target}: {', '.join(written)}" + (" (--force)" if unsafe else ""))
        else:
            print(f"Nothing to write: {target} is up to date")
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _import_radiology(args: argparse.Namespace, target: Path, rates: Path | None) -> int:
    """Refused (exit 1, as the NLK import) naming file, row and column; nothing is
    written then. A bad option is a usage error (exit 2)."""
    from datetime import date

    from daemon.registers import radiology_import, radiology_tariffs

    try:
        start = date.fromisoformat(args.valid_from) if args.valid_from else None
    except ValueError:
        print(f"kravmottak: --valid-from {args.valid_from!r} is not YYYY-MM-DD", file=sys.stderr)
        return 2

    def run(staging: Path, current: Path):
        return radiology_import.import_radiology(
            Path(args.file),
            staging,
            addons=Path(args.addons) if args.addons else None,
            rates=rates,
            example=args.example_categories,
            valid_from=start or date(date.today().year, 1, 1),
            current=current,
        )

    def load_side(folder: Path):
        loaded = radiology_tariffs.parse(
            *(_text(folder / n) for n in radiology_tariffs.FILES), str(folder)
        )
        return import_guard.side(
            ((c, v.category) for c, v in loaded.codes.items()),
            ((r.category, r.sector, r.valid_from) for r in loaded.rates),
        )

    return _guarded_import(args, target, radiology_tariffs.FILES, run, load_side)


def _import_egenandel(args: argparse.Namespace, target: Path) -> int:
    """The egenandel register (EG-01..12): one TOML file, validated whole."""
    from daemon.registers import egenandel

    if args.rates or args.addons or args.example_categories or args.valid_from:
        print("kravmottak: --kind egenandel takes the register file only", file=sys.stderr)
        return 2

    def load_side(folder: Path):
        return import_guard.side(*egenandel.guard_side(egenandel.load(folder / egenandel.FILE)))

    return _guarded_import(
        args,
        target,
        (egenandel.FILE,),
        lambda staging, current: egenandel.import_register(Path(args.file), staging, current),
        load_side,
    )


def cmd_tariff_show(args: argparse.Namespace) -> int:
    from datetime import date

    from daemon.registers import tariffs

    if args.code.strip().lower() == "egenandel":
        return _show_egenandel(args)

    try:
        day = date.fromisoformat(args.date) if args.date else date.today()
    except ValueError:
        raise UsageError(f"--date {args.date!r} is not a date (YYYY-MM-DD)") from None
    try:
        registry_ = tariffs.load(Path(args.dir) if args.dir else _settings(args).paths.tariffs)
    except tariffs.TariffError as exc:
        print(f"kravmottak: {exc}", file=sys.stderr)
        return 1
    wanted = args.code.strip().upper()
    sectors = [args.sector] if args.sector else list(tariffs.SECTORS)
    code = registry_.code(wanted, day)
    if code is None:
        rows = _radiology_rows(registry_.radiology, wanted, day, sectors)
        if rows is None:
            print(
                f"kravmottak: {args.code} is not in the NLK register nor the radiology register",
                file=sys.stderr,
            )
            return 1
        _print_rows(rows)
        return 0
    yes_no = {True: "yes", False: "no"}
    rows = [
        ("code", f"{code.code}  {code.name}"),
        ("field", f"{code.field} ({code.field_prefix})"),
        ("category", f"{code.category} ({code.category_from})" if code.category else "none"),
        ("starred", yes_no[code.starred]),
        ("pharmacogenetic", yes_no[code.pharmacogenetic]),
        ("valid", f"{code.valid_from or '…'} – {code.valid_to or '(open)'}"),
        ("replaced by", code.replaced_by or "-"),
    ]
    for other in registry_.versions(code.code):
        if other != code:
            span = f"{other.valid_from or '…'} – {other.valid_to or '(open)'}"
            rows.append(("other version", f"{other.category or 'no category'} {span}"))
    status = "valid" if code.valid_on(day) else "NOT valid"
    rows.append(("on", f"{day}: {status}"))
    for sector in sectors:
        rate = registry_.rate_entry(code.category, sector, day) if code.category else None
        text = f"{rate.kroner:.2f} kr (from {rate.valid_from}, {rate.source})" if rate else "none"
        rows.append((f"rate {sector}", text))
    _print_rows(rows)
    return 0


def _show_egenandel(args: argparse.Namespace) -> int:
    """`tariff show egenandel [--date D]`: the register, and the amounts on a day."""
    from datetime import date

    from daemon.registers import egenandel, tariffs

    try:
        registry_ = tariffs.load(Path(args.dir) if args.dir else _settings(args).paths.tariffs)
        day = date.fromisoformat(args.date) if args.date else None
    except tariffs.TariffError as exc:
        print(f"kravmottak: {exc}", file=sys.stderr)
        return 1
    except ValueError:
        raise UsageError(f"--date {args.date!r} is not a date (YYYY-MM-DD)") from None
    print(egenandel.render_summary(registry_.egenandel))
    if day is not None:
        for kind in egenandel.SERVICE_KINDS:
            found = registry_.egenandel.amount(kind, day)
            text = f"{found.kroner} kr (from {found.valid_from})" if found else "none"
            print(f"  on {day}: {kind} {text}")
    return 0


def cmd_egenandel_sum(args: argparse.Namespace) -> int:
    """The frikort basis of one patient pseudonym in one year (EG-03), for testers."""
    from daemon.ledger.backends import open_ledger

    ledger = open_ledger(_settings(args), readonly=True)
    try:
        sums = ledger.egenandel_sum(args.patient_key, args.year)
    finally:
        ledger.close()
    basis = sums["betalt"] + sums["ikke betalt"]
    print(f"patient {args.patient_key}, {args.year}:")
    for status in ("betalt", "ikke betalt", "fritak"):
        print(f"  {status}: {sums[status]:.2f}")
    print(f"  frikort basis (betalt + ikke betalt): {basis:.2f}")
    return 0


def _radiology_rows(register, wanted: str, day, sectors: list[str]) -> list | None:
    """`tariff show` for a radiology code or a tilleggskode (None: neither)."""
    code = register.code(wanted, day)
    if code is None:
        addon = register.addon(wanted)
        if addon is None:
            return None
        rows = [("tilleggskode", f"{addon.code}  {addon.name}"), ("role", addon.role)]
        return rows + ([("source", addon.source)] if addon.source else [])
    rows = [
        ("code", f"{code.code}  {code.name or '(no name)'}"),
        ("code system", code.code_system),
        ("kind", code.kind),
        ("modality", code.modality or "-"),
        ("regions", "+".join(code.regions) or "-"),
        ("category", f"{code.category} ({code.source})" if code.category else "none"),
        ("needs guidance", "yes" if code.needs_guidance else "no"),
        ("valid", f"{code.valid_from or '…'} – {code.valid_to or '(open)'}"),
        ("on", f"{day}: {'valid' if code.valid_on(day) else 'NOT valid'}"),
    ]
    for sector in sectors:
        rate = register.rate_entry(code.category, sector, day) if code.category else None
        text = f"{rate.kroner:.2f} kr (from {rate.valid_from}, {rate.source})" if rate else "none"
        rows.append((f"rate {sector}", text))
    return rows


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")


# ---- our own keys: `keys new [--csr] [--force]` and `keys show` (daemon/transport/keys.py)


def cmd_keys_new(args: argparse.Namespace) -> int:
    """A production key where the config says, encrypted with the configured passphrase
    source, mode 0600; with --csr also the request for the enterprise certificate."""
    from cryptography.hazmat.primitives import serialization

    settings = _settings(args)
    paths, party = settings.paths, settings.party
    if not settings.key_passphrase:
        raise ConfigError(
            f"{settings.source}: [keys] names no passphrase source (passphrase_file,"
            " passphrase_env or passphrase_credential): a production key is encrypted"
        )
    secret = keys.passphrase(settings.key_passphrase)
    if paths.private_key.exists() and not args.force:
        print(
            f"kravmottak: {paths.private_key} exists already; --force replaces it"
            " (the old key is gone then, and so is every certificate issued for it)",
            file=sys.stderr,
        )
        return 1
    key = keys.new_production_key(paths.private_key, secret, bits=args.bits, replace=args.force)
    print(f"private key  {paths.private_key} (RSA {args.bits} bits, encrypted, mode 0600)")
    if args.csr:
        request = keys.signing_request(key, her_id=party.her_id, orgnr=party.orgnr, name=party.name)
        keys.write_public(paths.csr, request.public_bytes(serialization.Encoding.PEM))
        print(f"request      {paths.csr} ({request.subject.rfc4514_string()})")
        print(
            f"next: send the request to the issuer; install the certificate at {paths.certificate}"
        )
    try:
        current = keys.load_certificates(paths.certificate)
    except (OSError, ValueError):
        current = ()
    if current and current[0].public_key().public_numbers() != key.public_key().public_numbers():
        print(
            f"note: {paths.certificate} belongs to the old key; the daemon will not start"
            " until the new certificate is there",
            file=sys.stderr,
        )
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    """Our key (type, size, encrypted, mode), certificate (subject, issuer, validity,
    fingerprint, whether it matches the key) and pending request. No secrets."""
    settings = _settings(args)
    try:
        secret = keys.passphrase(settings.key_passphrase)
    except keys.KeyLoadError as exc:
        print(f"kravmottak: {exc} (the key is shown unopened)", file=sys.stderr)
        secret = None
    rows, public = keys.key_facts(settings.paths.private_key, secret)
    rows += keys.certificate_facts(settings.paths.certificate, public)
    rows += keys.request_facts(settings.paths.csr)
    _print_rows(rows)
    return 0


def _keys_parser(sub) -> None:
    k = sub.add_parser("keys", help="our own key, certificate and certificate request")
    actions = k.add_subparsers(dest="action", required=True)
    new = actions.add_parser(
        "new", help="a new production key (encrypted, 0600) where [keys] private_key says"
    )
    new.add_argument("--csr", action="store_true", help="also write the certificate request")
    new.add_argument("--force", action="store_true", help="replace an existing key")
    new.add_argument("--bits", type=int, choices=[2048, 3072, 4096], default=3072)
    new.set_defaults(func=cmd_keys_new)
    actions.add_parser(
        "show", help="key type and size, certificate subject, issuer, validity, fingerprint"
    ).set_defaults(func=cmd_keys_show)


# ---- backups and retention (daemon/tools/backup.py)


def cmd_backup(args: argparse.Namespace) -> int:
    from daemon.tools import backup

    settings = _settings(args)
    dest = Path(args.dest).resolve()
    copied = backup.backup(settings, dest)
    for name, size in copied:
        print(f"  {name}  {size} bytes")
    print(f"backup written to {dest} ({len(copied)} files; the private key is not included)")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Bring the ledger's schema to this version's revision (a new ledger is created)."""
    from daemon.ledger import migrate

    settings = _settings(args)
    before = migrate.current(settings.ledger)
    after = migrate.upgrade(settings.ledger)
    where = migrate.redact(settings.ledger)
    if before == after:
        print(f"ledger {where}: at revision {after} (head), nothing to do")
    else:
        print(f"ledger {where}: upgraded from {before or 'empty'} to revision {after} (head)")
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    """The ledger's revision, and whether it is this version's head. Exit 1 when not."""
    from daemon.ledger import migrate

    settings = _settings(args)
    found = migrate.current(settings.ledger)
    where = migrate.redact(settings.ledger)
    if found == migrate.HEAD:
        print(f"ledger {where}: revision {found} (head)")
        return 0
    shown = {None: "empty", migrate.LEGACY: "made before versioned migrations"}.get(found, found)
    print(f"ledger {where}: {shown}; head is {migrate.HEAD}: run `kravmottak db upgrade`")
    return 1


def cmd_db_copy(args: argparse.Namespace) -> int:
    """Copy the configured ledger into another (an empty PostgreSQL database), verified."""
    from daemon.ledger import migrate
    from daemon.tools import dbcopy

    settings = _settings(args)
    tables = dbcopy.copy(settings.ledger, args.to)
    for table, rows in tables:
        print(f"  {table}: {rows} rows")
    print(
        f"copied {sum(r for _, r in tables)} rows into {migrate.redact(args.to)};"
        " counts and money sums verified"
    )
    return 0


def cmd_archive_prune(args: argparse.Namespace) -> int:
    from datetime import date

    from daemon.tools import backup

    settings = _settings(args)
    try:
        days = backup.parse_age(args.older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    if days < args.minimum_days and not args.force:
        raise UsageError(
            f"--older-than {days}d keeps less than {args.minimum_days} days of originals;"
            " --force if that is meant"
        )
    today = date.fromisoformat(args.today) if args.today else date.today()
    pruned = backup.prune(settings.paths.archive, days, today, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for p in pruned:
        print(f"  {verb} archive/{p.folder}: {p.files} files, {p.bytes} bytes")
    print(
        f"{verb} {len(pruned)} day folder(s) older than {days} days"
        f" ({sum(p.files for p in pruned)} files)"
    )
    return 0


# --------------------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kravmottak", description=__doc__)
    p.add_argument(
        "--config",
        help=f"config file (default: ${config.CONFIG_ENV}, then {config.DEFAULT_CONFIG})",
    )
    sub = p.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="create a self-contained sandbox in DIR")
    init.add_argument("dir")
    init.add_argument("--her-id", default="79768", help="our own HER-id (default 79768)")
    init.add_argument("--force", action="store_true", help="overwrite an existing config")
    init.set_defaults(func=cmd_init)

    partner = sub.add_parser("partner", help="partner agreements").add_subparsers(
        dest="action", required=True
    )
    add = partner.add_parser("add", help="add or replace a partner agreement")
    add.add_argument("--her-id", required=True)
    add.add_argument("--cpa-id", required=True)
    add.add_argument("--orgnr")
    add.add_argument("--name")
    add.add_argument(
        "--certificate",
        action="append",
        help="partner signing certificate (PEM); repeat to keep old and new during a rollover",
    )
    add.add_argument("--require-signature", action=argparse.BooleanOptionalAction, default=True)
    add.add_argument(
        "--encrypts-to-us",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="refuse plain payloads from this partner",
    )
    add.add_argument(
        "--encrypt",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="encrypt our answers to the partner's certificate",
    )
    add.add_argument("--compress", action=argparse.BooleanOptionalAction, default=False)
    add.add_argument("--action", action="append", help="allowed Service/Action (repeatable)")
    add.add_argument(
        "--force", action="store_true", help="register an expired certificate anyway (warned)"
    )
    add.set_defaults(func=cmd_partner_add)
    partner.add_parser(
        "list", help="list partner agreements (exit 1 when one is broken)"
    ).set_defaults(func=cmd_partner_list)
    prem = partner.add_parser("remove", help="remove a partner agreement")
    prem.add_argument("--her-id", required=True)
    prem.add_argument("--cpa-id", help="only this agreement (default: every one of the HER-id)")
    prem.set_defaults(func=cmd_partner_remove)

    inst = sub.add_parser("institution", help="the institution registry").add_subparsers(
        dest="action", required=True
    )
    iadd = inst.add_parser("add", help="add or replace an institution")
    iadd.add_argument("--orgnr", required=True, help="organisation number (9 digits, mod 11)")
    iadd.add_argument("--name", required=True)
    iadd.add_argument(
        "--rhf", help='the RHF that owns it or has its driftsavtale ("Helse Sør-Øst" works too)'
    )
    iadd.add_argument(
        "--ownership",
        choices=list(registry.OWNERSHIPS),
        default="rhf",
        help="; ".join(f"{k}: {v}" for k, v in registry.OWNERSHIPS.items()),
    )
    iadd.add_argument(
        "--service",
        action="append",
        choices=list(registry.SERVICES),
        help="what the institution may claim, repeatable (default lab and radiology); "
        "register units with their own services with `institution unit`",
    )
    iadd.add_argument(
        "--sender",
        action="append",
        help="HER-id of a partner that may claim for it (besides the partner with its orgnr)",
    )
    iadd.set_defaults(func=cmd_institution_add)
    irm = inst.add_parser("remove", help="remove an institution")
    irm.add_argument("--orgnr", required=True)
    irm.set_defaults(func=cmd_institution_remove)
    iunit = inst.add_parser(
        "unit", help="register the services of one unit (Enhet, by reshID) of an institution"
    )
    iunit.add_argument("--orgnr", required=True)
    iunit.add_argument("--resh", required=True, help="the unit's reshID, as in the message")
    iunit.add_argument("--name")
    iunit.add_argument("--service", action="append", choices=list(registry.SERVICES))
    iunit.add_argument("--remove", action="store_true", help="forget the unit's own services")
    iunit.set_defaults(func=cmd_institution_unit)
    inst.add_parser(
        "migrate", help="rewrite institutions.toml from the old kinds to ownership and services"
    ).set_defaults(func=cmd_institution_migrate)
    inst.add_parser("list", help="list institutions").set_defaults(func=cmd_institution_list)

    run = sub.add_parser("run", help="run the daemon (polls the inbox)")
    run.add_argument(
        "--worker-id", metavar="ID", help="this worker's id (default [worker] id, else host:pid)"
    )
    run.set_defaults(func=cmd_run)
    rekey = sub.add_parser(
        "rekey-patients",
        help="replace an old ledger's unkeyed patient pseudonyms by the HMAC (daemon stopped)",
    )
    rekey.add_argument(
        "--drop-unmapped",
        action="store_true",
        help="clear pseudonyms no archived message explains",
    )
    rekey.set_defaults(func=cmd_rekey_patients)
    db = sub.add_parser(
        "db", help="the ledger's schema: upgrade, current revision, copy to PostgreSQL"
    ).add_subparsers(dest="action", required=True)
    db.add_parser(
        "upgrade", help="migrate the ledger to this version's schema (after a backup)"
    ).set_defaults(func=cmd_db_upgrade)
    db.add_parser(
        "current", help="the ledger's schema revision and whether it is the newest"
    ).set_defaults(func=cmd_db_current)
    dcopy = db.add_parser(
        "copy", help="copy the ledger into an empty PostgreSQL database, verified"
    )
    dcopy.add_argument("--to", required=True, metavar="URL", help="postgresql://... (empty)")
    dcopy.set_defaults(func=cmd_db_copy)
    sub.add_parser("process", help="handle the inbox once, then exit").set_defaults(
        func=cmd_process
    )
    val = sub.add_parser("validate", help="check one message file; print every problem")
    val.add_argument("file")
    val.set_defaults(func=cmd_validate)
    status = sub.add_parser(
        "status",
        help="counts per state, oldest unanswered, undelivered, held payments, the batches",
    )
    status.add_argument("--json", action="store_true", help="the same figures as JSON")
    status.set_defaults(func=cmd_status)
    pay = sub.add_parser(
        "payments", help="open payments: held ones, and moving them"
    ).add_subparsers(dest="action", required=True)
    held = pay.add_parser("held", help="payments no batch can pay (exit 1 when any)")
    held.add_argument("--json", action="store_true")
    held.set_defaults(func=cmd_payments_held)
    rp = pay.add_parser(
        "repoint", help="move the open payments of one payee to another (recorded in the ledger)"
    )
    rp.add_argument("--from", dest="from_payee", required=True, metavar="PAYEE")
    rp.add_argument("--to", dest="to_payee", required=True, metavar="PAYEE")
    rp.add_argument("--reason", help="why, for the audit row")
    rp.set_defaults(func=cmd_payments_repoint)
    bak = sub.add_parser(
        "backup", help="a consistent online copy of the ledger, with config and registers"
    )
    bak.add_argument("dest", help="a new (or empty) folder")
    bak.set_defaults(func=cmd_backup)
    arch = sub.add_parser("archive", help="the archive of answered originals").add_subparsers(
        dest="action", required=True
    )
    prune = arch.add_parser("prune", help="remove archive/YYYY-MM-DD folders past retention")
    prune.add_argument("--older-than", required=True, metavar="DAYS", help="e.g. 400d")
    prune.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    prune.add_argument(
        "--minimum-days", type=int, default=365, help="refuse a shorter retention (default 365)"
    )
    prune.add_argument("--force", action="store_true", help="allow less than --minimum-days")
    prune.add_argument("--today", help=argparse.SUPPRESS)  # tests: the day to count from
    prune.set_defaults(func=cmd_archive_prune)
    stl = sub.add_parser("settle", help="run one settlement batch now: a vedtak per payee")
    stl.add_argument("--cutoff", help="claims answered up to this instant (default: now)")
    stl.set_defaults(func=cmd_settle)
    sub.add_parser("rules", help="the remark list (number, rule, text, source)").set_defaults(
        func=cmd_rules
    )
    explain = sub.add_parser("explain", help="why a message got its answer, bill by bill")
    explain.add_argument("message_id", help="ebXML MessageId or MsgHead MsgId")
    explain.set_defaults(func=cmd_explain)
    wrap = sub.add_parser("wrap", help="wrap a bare MsgHead file in an ebMS message (testing)")
    wrap.add_argument("msghead")
    wrap.add_argument("output", help="a file, or a folder such as the inbox")
    wrap.add_argument("--from-her", default="90001", help="sender HER-id (default: demo partner)")
    wrap.add_argument("--cpa-id", default="kravmottak:demo:1")
    wrap.add_argument("--to-her", default="79768")
    wrap.add_argument("--message-id", help="ebXML MessageId (default: a new uuid)")
    wrap.add_argument("--ack", action=argparse.BooleanOptionalAction, default=True)
    wrap.add_argument("--gzip", action="store_true", help="gzip the payload part")
    wrap.set_defaults(func=cmd_wrap)
    rpl = sub.add_parser(
        "replay", help="replay recorded messages in a throw-away sandbox; compare or record"
    )
    rpl.add_argument(
        "source",
        nargs="+",
        help="a folder of recorded *.msg (MIME) and *.xml (MsgHead) files, or some of them"
        " (a subset: only those are compared with --expect)",
    )
    rpl.add_argument("--expect", metavar="DIR", help="compare with the expectations in DIR")
    rpl.add_argument("--record", metavar="DIR", help="write the outputs as the expectations")
    rpl.add_argument("--at", metavar="DATETIME", help="the clock (default: each message's own)")
    rpl.add_argument("--settle", action="store_true", help="one settlement batch at the end")
    rpl.add_argument("--shadow", metavar="CONFIG", help="compare with a candidate config")
    rpl.add_argument("--from-her", default="90001", help="sender of bare MsgHead files")
    rpl.add_argument("--cpa-id", help="CPA of bare MsgHead files (default: the sender's)")
    rpl.set_defaults(func=cmd_replay)
    # ---- tariffs
    tariff = sub.add_parser(
        "tariff", help="the NLK and radiology code registers and their rates"
    ).add_subparsers(dest="action", required=True)
    timp = tariff.add_parser(
        "import", help="import Helfo's NLK list or radiology table (and rates) into the tariffs"
    )
    timp.add_argument(
        "--kind", required=True, choices=["nlk", "radiologi", "egenandel"], help="the list"
    )
    timp.add_argument(
        "file",
        help="nlk: Helfo's NLK CSV (or the reference digest of it); radiologi: Helfo's"
        " table (.xlsx, or CSV kode,navn,refusjonskategori[,belop]) or the reference"
        " digest ncrp_codes.csv",
    )
    timp.add_argument("--rates", help="kroner per refusjonskategori (replaces the rate table)")
    timp.add_argument("--addons", help="radiologi: the tilleggskoder (reference digest)")
    timp.add_argument(
        "--example-categories",
        action="store_true",
        help="radiologi, digest: give every code an EXAMPLE category and EXAMPLE kroner",
    )
    timp.add_argument(
        "--valid-from",
        help="radiologi: the start of the kroner in Helfo's table (default: 1 January this year)",
    )
    timp.add_argument("--target", help="the tariffs folder (default: the config's [paths] tariffs)")
    timp.add_argument(
        "--dry-run", action="store_true", help="print the report and what is unsafe; write nothing"
    )
    timp.add_argument(
        "--force", action="store_true", help="write even when the import looks unsafe"
    )
    timp.add_argument(
        "--max-removed",
        default="5%",
        help="an import removing more than this share of codes or rates needs --force (5%%)",
    )
    timp.set_defaults(func=cmd_tariff_import)
    tshow = tariff.add_parser(
        "show", help="one NLK code, radiology code or tilleggskode: category, flags, rate"
    )
    tshow.add_argument("code", help="a code, or `egenandel` for the egenandel register")
    tshow.add_argument("--date", help="YYYY-MM-DD (default: today)")
    tshow.add_argument("--sector", choices=["stat", "privat"], help="default: both")
    tshow.add_argument("--dir", help="the registers folder (default: the config's [paths] tariffs)")
    tshow.set_defaults(func=cmd_tariff_show)
    # ---- egenandel (the frikort basis, EG-03)
    egen = sub.add_parser(
        "egenandel", help="the recorded egenandeler (frikort basis) per patient pseudonym"
    ).add_subparsers(dest="action", required=True)
    esum = egen.add_parser("sum", help="a patient pseudonym's egenandeler in a year")
    esum.add_argument("--patient-key", required=True, help="the pseudonym (never an fnr)")
    esum.add_argument("--year", required=True, type=int)
    esum.set_defaults(func=cmd_egenandel_sum)
    _keys_parser(sub)
    return p


UMASK = 0o027  # folders 0750, files 0640 at most, whatever the service manager set


def main(argv: list[str] | None = None) -> int:
    """Run one command. No traceback reaches an operator: a usage or configuration
    error is one line on stderr and exit 2; anything unexpected is one line naming the
    error and where (exit 1; KRAVMOTTAK_DEBUG=1 shows the traceback)."""
    os.umask(UMASK)
    args = parser().parse_args(argv)  # argparse: exit 2 with usage on a bad argument
    from daemon.service.lock import Locked

    try:
        return args.func(args)
    except Locked as exc:
        print(f"kravmottak: {exc}", file=sys.stderr)
        return USAGE
    except UsageError as exc:
        print(f"kravmottak: {exc}", file=sys.stderr)
        return USAGE
    except (ConfigError, keys.KeyLoadError) as exc:
        print(f"kravmottak: configuration error: {exc}", file=sys.stderr)
        return USAGE
    except BrokenPipeError:  # `kravmottak status | head`: the reader has had enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes
        return OK
    except KeyboardInterrupt:
        print("kravmottak: interrupted", file=sys.stderr)
        return 130
    except (OSError, sqlite3.Error) as exc:  # a file or folder we cannot use
        print(f"kravmottak: {_describe(exc)}", file=sys.stderr)
        return USAGE
    except Exception as exc:
        if os.environ.get("KRAVMOTTAK_DEBUG"):
            raise
        print(f"kravmottak: internal error: {_describe(exc)}", file=sys.stderr)
        return PROBLEMS


def _describe(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    if isinstance(exc, OSError) and exc.strerror:
        name = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{name}{where}"
    return f"{type(exc).__name__}: {exc}{where}"
