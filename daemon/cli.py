"""`kravmottak [--config PATH] COMMAND` — one CLI for operators and testers."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from daemon import config, files, logs
from daemon.config import ConfigError, Settings
from daemon.registers import registry
from daemon.transport import keys


def _settings(args: argparse.Namespace) -> Settings:
    return config.load(config.config_path(args.config))


# --------------------------------------------------------------------------- commands


def cmd_init(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    cfg = root / "kravmottak.toml"
    if cfg.exists() and not args.force:
        print(f"{cfg} exists already (use --force to overwrite)", file=sys.stderr)
        return 1
    root.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config.sandbox_config_text(args.her_id), encoding="utf-8")
    settings = config.load(cfg)
    files.ensure_folders(settings.paths)
    from daemon.ledger.sqlite import SqliteLedger

    SqliteLedger(settings.paths.ledger).close()
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
    print(cfg)
    return 0


def cmd_partner_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    certs = tuple(str(Path(c).resolve()) for c in args.certificate or ())
    for path in certs:  # refuse a file that is not a certificate before saving anything
        try:
            keys.load_certificates(Path(path))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--certificate {path}: {exc}") from exc
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
    for p in registry.load_partners(settings.paths.partners):
        rows.append(
            (
                p.her_id,
                p.cpa_id,
                p.orgnr or "-",
                p.name or "-",
                "required" if p.require_signature else "optional",
                f"{'yes' if p.encrypts_to_us else 'no'}/{'yes' if p.encrypt else 'no'}",
                "; ".join(keys.describe(c) for c in p.certs) or "-",
            )
        )
    _table(rows)
    return 0


def cmd_institution_add(args: argparse.Namespace) -> int:
    settings = _settings(args)
    inst = registry.Institution(
        args.orgnr, args.name, args.rhf, tuple(args.kind or ["hf"]), tuple(args.sender or ())
    )
    registry.upsert_institution(settings.paths.institutions, inst)
    print(f"institution {inst.orgnr} saved in {settings.paths.institutions}")
    return 0


def cmd_institution_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = [("ORGNR", "NAME", "RHF", "KINDS")]
    for i in registry.load_institutions(settings.paths.institutions):
        rows.append((i.orgnr, i.name, i.rhf, ",".join(i.kinds)))
    _table(rows)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.service import runner as service

    settings = _settings(args)
    logs.configure(settings.log_level)
    return service.run(settings)


def cmd_process(args: argparse.Namespace) -> int:
    from daemon.service import runner as service

    settings = _settings(args)
    logs.configure(settings.log_level)
    intake = service.build(settings)
    try:
        recovered = intake.recover()
        handled = intake.drain()
    finally:
        intake.ledger.close()
    print(f"recovered {recovered}, processed {handled}", file=sys.stderr)
    return 0


def cmd_settle(args: argparse.Namespace) -> int:
    """One settlement batch now (or up to --cutoff): a vedtak per payee in the outbox."""
    from daemon.service import runner as service
    from daemon.settlement import settle

    settings = _settings(args)
    logs.configure(settings.log_level)
    intake = service.build(settings)
    try:
        cutoff = intake.clock()
        if args.cutoff:
            try:
                cutoff = datetime.fromisoformat(args.cutoff.replace("Z", "+00:00"))
            except ValueError:
                print(f"kravmottak: --cutoff {args.cutoff!r} is not ISO 8601", file=sys.stderr)
                return 2
            if cutoff.tzinfo is None:
                cutoff = cutoff.replace(tzinfo=settle.Calendar.from_settings(settings).zone)
        settle.deliver(intake)  # whatever an earlier run recorded but did not write
        result = settle.settle(intake, cutoff=cutoff, kind="manual")
        last = intake.ledger.last_settlement()
    finally:
        intake.ledger.close()
    print(f"settlement run {result.run}: {result.vedtak} vedtak, up to {cutoff.isoformat()}")
    for v in last["vedtak"] if last else []:
        print(f"  {v['oppgjors_nr']}  {v['payee']}: {v['bills']} bills, paid {v['approved']:.2f}")
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
    from daemon.ledger.sqlite import SqliteLedger

    settings = _settings(args)
    ledger = SqliteLedger(settings.paths.ledger)
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
        print(f"  {m['rules_run']} rule evaluations, {len(m['trace'])} fired")
    return 0


def cmd_wrap(args: argparse.Namespace) -> int:
    from daemon.tools.wrap import wrap

    raw = wrap(
        Path(args.msghead).read_bytes(),
        from_her=args.from_her,
        cpa_id=args.cpa_id,
        to_her=args.to_her,
        message_id=args.message_id,
        ack_requested=args.ack,
        gzip=args.gzip,
    )
    out = Path(args.output)
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
    from daemon.ledger.sqlite import SqliteLedger

    settings = _settings(args)
    ledger = SqliteLedger(settings.paths.ledger)
    try:
        counts = ledger.counts()
        oldest = ledger.oldest_unanswered()
    finally:
        ledger.close()
    strays: list[str] = []
    inbox, settling = files.scan(settings.paths.inbox, settings.intake, strays=strays)
    work = [p for p in settings.paths.work.iterdir()] if settings.paths.work.exists() else []
    rows = [("WHAT", "COUNT")]
    rows.append(("inbox (received, ready)", str(len(inbox))))
    rows.append(("inbox (still being written)", str(settling)))
    rows.append(("inbox (never claimed: directories)", str(len(strays))))
    rows.append(("work (claimed, in hand)", str(len(work))))
    for key in ("claimed", "answered", "quarantined", "duplicates", "messages"):
        rows.append((f"ledger {key}", str(counts[key])))
    if inbox:  # a ready file in the inbox is unanswered too, and older than any claim
        first = datetime.fromtimestamp(min(c.mtime for c in inbox), UTC).isoformat()
        oldest = min(oldest, first) if oldest else first
    rows.append(("oldest unanswered", oldest or "-"))
    _table(rows)
    _settlement_status(settings)
    _running_daemon_status(settings)
    return 0


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


def _settlement_status(settings) -> None:
    """The next batch, the last one and its totals per payee."""
    from daemon.ledger.sqlite import SqliteLedger
    from daemon.settlement import settle

    calendar = settle.Calendar.from_settings(settings)
    now = service_clock(settings)()
    ledger = SqliteLedger(settings.paths.ledger)
    try:
        last = ledger.last_settlement()
    finally:
        ledger.close()
    upcoming = calendar.next_run(now)
    print()
    rows = [("SETTLEMENT", "")]
    rows.append(("next batch", upcoming.isoformat() if upcoming else "-"))
    if last is None:
        rows.append(("last batch", "never"))
    else:
        rows.append(("last batch", f"{last['kind']} run {last['id']}, up to {last['cutoff']}"))
    _table(rows)
    if last and last["vedtak"]:
        vrows = [("PAYEE", "OPPGJORSNR", "BILLS", "CLAIMED", "PAID", "DELIVERED")]
        for v in last["vedtak"]:
            vrows.append((
                v["payee"], v["oppgjors_nr"], str(v["bills"]), f"{v['claimed']:.2f}",
                f"{v['approved']:.2f}", "yes" if v["delivered"] else "no",
            ))  # fmt: skip
        total = sum(v["approved"] for v in last["vedtak"])
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
    try:
        current = tariffs.in_force(target, (tariffs.CODES_FILE, tariffs.RATES_FILE))
        report = tariff_import.import_nlk(Path(args.file), rates, target, current)
    except tariffs.TariffError as exc:
        print(f"kravmottak: tariff import refused, nothing written: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def _import_radiology(args: argparse.Namespace, target: Path, rates: Path | None) -> int:
    """Refused (exit 1, as the NLK import) naming file, row and column; nothing is
    written then. A bad option is a usage error (exit 2)."""
    from datetime import date

    from daemon.registers import radiology_import, radiology_tariffs, tariffs
    from daemon.registers.tariff_table import TariffError

    try:
        start = date.fromisoformat(args.valid_from) if args.valid_from else None
    except ValueError:
        print(f"kravmottak: --valid-from {args.valid_from!r} is not YYYY-MM-DD", file=sys.stderr)
        return 2
    try:
        report = radiology_import.import_radiology(
            Path(args.file),
            target,
            addons=Path(args.addons) if args.addons else None,
            rates=rates,
            example=args.example_categories,
            valid_from=start or date(date.today().year, 1, 1),
            current=tariffs.in_force(target, radiology_tariffs.FILES),
        )
    except TariffError as exc:
        print(f"kravmottak: tariff import refused, nothing written: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_tariff_show(args: argparse.Namespace) -> int:
    from datetime import date

    from daemon.registers import tariffs

    try:
        day = date.fromisoformat(args.date) if args.date else date.today()
        registry_ = tariffs.load(Path(args.dir) if args.dir else _settings(args).paths.tariffs)
    except (ValueError, tariffs.TariffError) as exc:
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
    add.set_defaults(func=cmd_partner_add)
    partner.add_parser("list", help="list partner agreements").set_defaults(func=cmd_partner_list)

    inst = sub.add_parser("institution", help="the institution registry").add_subparsers(
        dest="action", required=True
    )
    iadd = inst.add_parser("add", help="add or replace an institution")
    iadd.add_argument("--orgnr", required=True)
    iadd.add_argument("--name", required=True)
    iadd.add_argument("--rhf", required=True, help="the regional health authority it belongs to")
    iadd.add_argument(
        "--kind", action="append", choices=registry.INSTITUTION_KINDS, help="repeat for several"
    )
    iadd.add_argument(
        "--sender",
        action="append",
        help="HER-id of a partner that may claim for it (besides the partner with its orgnr)",
    )
    iadd.set_defaults(func=cmd_institution_add)
    inst.add_parser("list", help="list institutions").set_defaults(func=cmd_institution_list)

    sub.add_parser("run", help="run the daemon (polls the inbox)").set_defaults(func=cmd_run)
    sub.add_parser("process", help="handle the inbox once, then exit").set_defaults(
        func=cmd_process
    )
    val = sub.add_parser("validate", help="check one message file; print every problem")
    val.add_argument("file")
    val.set_defaults(func=cmd_validate)
    sub.add_parser(
        "status", help="counts per state, oldest unanswered, the settlement batches"
    ).set_defaults(func=cmd_status)
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
    rpl.add_argument("source", help="a folder of recorded *.msg (MIME) and *.xml (MsgHead) files")
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
    timp.add_argument("--kind", required=True, choices=["nlk", "radiologi"], help="the list")
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
    timp.add_argument("--target", help="the tariffs folder (default: config/tariffs)")
    timp.set_defaults(func=cmd_tariff_import)
    tshow = tariff.add_parser(
        "show", help="one NLK code, radiology code or tilleggskode: category, flags, rate"
    )
    tshow.add_argument("code")
    tshow.add_argument("--date", help="YYYY-MM-DD (default: today)")
    tshow.add_argument("--sector", choices=["stat", "privat"], help="default: both")
    tshow.add_argument("--dir", help="the registers folder (default: the config's [paths] tariffs)")
    tshow.set_defaults(func=cmd_tariff_show)
    return p


UMASK = 0o027  # folders 0750, files 0640 at most, whatever the service manager set


def main(argv: list[str] | None = None) -> int:
    os.umask(UMASK)
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, keys.KeyLoadError) as exc:
        print(f"kravmottak: configuration error: {exc}", file=sys.stderr)
        return 2
