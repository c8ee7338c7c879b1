"""twinwall policy compile|check|adopt|apply"""

from __future__ import annotations

import argparse
import os
import sys

from twinwall.errors import InputError

DESCRIPTION = """\
Write a host's firewall once, for both families, in a TOML file; compile it for
iptables-restore (rules.v4 + rules.v6) or nft (one inet table); prove the compiled rules with
twinwall's own parsers and evaluator; write such a file from the rules a host already has;
apply it through the transaction of 'twinwall fix' (rollback unless confirmed).

Every compiled ruleset starts with: loopback accepted, loopback sources on other interfaces
dropped, the ICMPv6 RFC 4890 requires (neighbour discovery with hop limit 255, packet too big,
MLD from fe80::/10, errors) and their IPv4 twins, then established/related accepted and invalid
dropped. [defaults] loopback, spoofed_loopback, essential_icmp, established, drop_invalid = false
turn them off.

A rule whose from/to has no member in a family is left out of that family, and said so; a
negated match (not_from, "!group") with no member in a family is always true there: the rule
stays, without it.

A file that says [defaults] families = ["ipv4"] (adopt writes one when it read only IPv4
rules) governs that family alone: compile writes only rules.v4 (nft: every rule led by
'meta nfproto ipv4', base chains accepting), check proves IPv4 only, apply leaves the host's
IPv6 rules as they are."""

EPILOG = """\
file format (see README.md, "twinwall policy"):
  [defaults]
  families = ["ipv4"]     # the families the file governs (default both); the other one is
                          # not compiled, proved or applied: the host keeps its rules
  input = "drop"          # drop | reject | accept, or {ipv4 = "drop", ipv6 = "drop"}
  forward = "drop"
  output = "accept"
  log_dropped = true      # log before dropping, never loopback traffic
  [groups]
  office = ["192.0.2.0/24", "2001:db8:1::/64"]
  [[rule]]
  direction = "in"        # in | out | forward
  proto = "tcp"           # tcp | udp | icmp | any | sctp | esp ... | a number
  ports = [22, "8000-8100"]
  from = "office"         # group names or CIDRs; "!office" or not_from = ... negates
  action = "accept"       # accept | drop | reject
  family = "both"         # ipv4 | ipv6 | both
  # also: to, not_to, source_ports, in_interface, out_interface, icmp_types, hop_limit,
  #       uid (out only), reject_with, log, comment

examples:
  twinwall policy compile host.toml -o out/            # out/rules.v4, out/rules.v6
  twinwall policy compile host.toml --target nft       # the nft script on stdout
  sudo twinwall policy check host.toml
  sudo twinwall policy adopt -o host.toml --twin
  twinwall policy adopt --iptables v4.rules --ip6tables v6.rules -o host.toml
  sudo twinwall policy apply host.toml --confirm-timeout 120

exit codes: compile 0; check 0 proved and clean, 1 proved with warnings (a rule in one family
only), 2 error (a bad entry: file, line and key; a compiled rule that decides differently);
adopt 0 equivalent, 1 not equivalent (the differences are listed in the file); 2 error"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")
    c = sub.add_parser("compile", help="compile a policy file for iptables-restore or nft",
                       description="Compile FILE: rules.v4 and rules.v6 (iptables) or one nft script. "
                       "Notes on what a family leaves out go to standard error.")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--target", choices=("iptables", "nft"), default="iptables", help="default: iptables")
    c.add_argument("-o", "--output", metavar="DIR", help="write rules.v4 + rules.v6 (or twinwall.nft) into DIR")
    k = sub.add_parser("check", help="compile and prove a policy file with twinwall's evaluator",
                       description="Compile FILE for both targets, read the output back with twinwall's "
                       "parsers (as root also as iptables-save / nft -j print it after loading it into a "
                       "scratch network namespace) and prove with the evaluator that every packet gets the "
                       "verdict the file gives it, per family. Lists where the families differ.")
    k.add_argument("file", metavar="FILE")
    k.add_argument("--target", choices=("iptables", "nft", "both"), default="both")
    k.add_argument("--no-scratch", action="store_true", help="do not load the rules into a scratch namespace")
    a = sub.add_parser("adopt", help="write a policy file from the rules a host has",
                       description="Read the live rules (or dumps, as audit) and write a policy file whose "
                       "compiled rules decide every new connection in filter INPUT, FORWARD and OUTPUT as "
                       "they do, proved per family with the evaluator. Rules that read the same in both "
                       "families become one rule; chains of ufw, firewalld, Docker and kube-proxy are "
                       "named in comments, not copied; what cannot be written is listed in the file.")
    a.add_argument("-o", "--output", metavar="FILE", help="write the policy here (default: standard output)")
    a.add_argument("--twin", action="store_true",
                   help="propose the missing twin of every one-family rule, as commented rules to review")
    from twinwall.commands.inputs import add_input_arguments

    add_input_arguments(a)
    y = sub.add_parser("apply", help="load a policy through the transaction (rollback unless confirmed)",
                       description="Compile and prove FILE, then load it through twinwall's transaction: "
                       "the lockout guard, a rollback armed before the change, atomic load; confirm with "
                       "'twinwall confirm' before the timeout ('twinwall rollback' reverts at once).")
    y.add_argument("file", metavar="FILE")
    y.add_argument("--target", choices=("iptables", "nft"), default="iptables")
    y.add_argument("--confirm-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="roll back unless confirmed within this many seconds (default 60)")
    y.add_argument("--allow-lockout", action="store_true",
                   help="load even when the new rules would cut the connection you are on")
    y.add_argument("--no-persist", action="store_true", help="do not write the persistence files on confirm")


def run(args: argparse.Namespace) -> int:
    cmd = getattr(args, "policy_command", None)
    if cmd == "compile":
        return _compile(args)
    if cmd == "check":
        return _check(args)
    if cmd == "adopt":
        return _adopt(args)
    if cmd == "apply":
        return _apply(args)
    raise InputError("give a subcommand: compile, check, adopt or apply (twinwall policy --help)")


def _notes(lowered) -> None:
    for note in lowered.notes:
        print(f"twinwall: note: {'IPv4' if note.family == 'ipv4' else 'IPv6'}: {note}", file=sys.stderr)


def _compile(args) -> int:
    from twinwall.policy.check import compiled_texts
    from twinwall.policy.generators.iptables import FILE_NAME
    from twinwall.policy.lower import lower
    from twinwall.policy.model import load_policy

    policy = load_policy(args.file)
    lowered = lower(policy)
    texts = compiled_texts(lowered, args.target, os.path.basename(args.file))
    files = ({FILE_NAME[f]: t for f, t in texts.items()} if args.target == "iptables" else {"twinwall.nft": texts})
    if args.output:
        from twinwall.report.output import emit

        try:
            os.makedirs(args.output, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {args.output}: {exc.strerror or exc}") from None
        for name, text in files.items():
            emit(text, os.path.join(args.output, name))
    else:
        for name, text in files.items():
            if len(files) > 1:
                sys.stdout.write(f"### {name}\n")
            sys.stdout.write(text)
    _notes(lowered)
    _outside(policy, args.target)
    return 0


def _outside(policy, target: str) -> None:
    """Say what a file that governs one family leaves alone."""
    from twinwall.policy.generators.iptables import FILE_NAME
    from twinwall.policy.model import FAMILY_LABEL

    for family in policy.outside():
        what = (f"{FILE_NAME[family]} is not written" if target == "iptables"
                else "the nft table's rules are all led by 'meta nfproto' of the file's family and its chains accept")
        print(f"twinwall: note: {FAMILY_LABEL[family]} is outside this file ([defaults] families): {what}; "
              f"{FAMILY_LABEL[family]} is left as the host has it", file=sys.stderr)


def _check(args) -> int:
    from twinwall.policy.check import TARGETS, check_policy
    from twinwall.policy.model import load_policy

    policy = load_policy(args.file)
    targets = TARGETS if args.target == "both" else (args.target,)
    result = check_policy(policy, targets, scratch=False if args.no_scratch else None)
    print(render_check(args.file, result))
    return result.exit_code()


def render_check(path: str, result) -> str:
    lines = [f"twinwall policy check: {path}"]
    for p in result.proved:
        lines.append(f"  proved: {p}")
    for s in result.skipped:
        lines.append(f"  skipped: {s}")
    fam = [f"  {'IPv4' if n.family == 'ipv4' else 'IPv6'}: {n}" for n in result.notes]
    if fam or result.lowered.family_only:
        lines.append("where the families differ:")
        lines.extend(fam)
        for rule, family, why in result.lowered.family_only:
            lines.append(f"  {rule.label()}: {'IPv4' if family == 'ipv4' else 'IPv6'} only ({why})")
    for i in result.info:
        lines.append(f"  info: {i}")
    for o in result.outside:
        lines.append(o)
    for w in result.warnings:
        lines.append(f"warning: {w}")
    for m in result.mismatches:
        lines.append(f"WRONG: {m}")
    families = result.lowered.families
    scope = ("in both families" if len(families) > 1
             else f"in {'IPv4' if families[0] == 'ipv4' else 'IPv6'} (the file's only family)")
    verdict = ("the compiled rules decide differently from the policy" if result.mismatches else
               f"proved: every packet gets the policy's verdict {scope}"
               + (f" ({len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''})" if result.warnings else ""))
    lines.append(verdict)
    return "\n".join(lines)


def _adopt(args) -> int:
    from twinwall.commands.inputs import snapshot_from_args
    from twinwall.policy.adopt import adopt_snapshot

    snapshot = snapshot_from_args(args)
    result = adopt_snapshot(snapshot, twin=args.twin)
    from twinwall.report.output import emit

    emit(result.text, args.output)
    for line in result.summary():
        print(f"twinwall: {line}", file=sys.stderr)
    return 0 if result.equivalent else 1


def _apply(args) -> int:
    from twinwall.apply.candidate import Candidate
    from twinwall.policy.check import check_policy, compiled_texts
    from twinwall.policy.lower import lower
    from twinwall.policy.model import load_policy

    policy = load_policy(args.file)
    # as root the rules are also proved as the tools print them back (the only proof of nft)
    proof = check_policy(policy, (args.target,))
    if proof.mismatches:
        raise InputError(f"{args.file}: the compiled rules do not prove ({proof.mismatches[0]}): not applied")
    lowered = lower(policy)
    texts = compiled_texts(lowered, args.target, os.path.basename(args.file))
    summary = f"twinwall policy apply {os.path.basename(args.file)} ({args.target})"
    if args.target == "iptables":
        # a family outside the file gets no text: the transaction leaves its rules alone
        candidate = Candidate("iptables", ipv4=texts.get("ipv4"), ipv6=texts.get("ipv6"), summary=summary)
    else:
        candidate = Candidate("nft", nft=texts, summary=summary)
    try:
        from twinwall.apply import transaction
    except ImportError:
        raise InputError("applying needs twinwall's transaction (twinwall.apply.transaction), not installed here") from None
    try:
        tx = transaction.apply(candidate, confirm_timeout=args.confirm_timeout, allow_lockout=args.allow_lockout,
                               persist=not args.no_persist)
    except NotImplementedError as exc:
        raise InputError(f"the transaction is not available in this build: {exc}") from None
    _notes(lowered)
    _outside(policy, args.target)
    if not getattr(tx, "changed", True):
        print(f"{summary}: already loaded, nothing changed")
        return 0
    print(f"{summary}: loaded, transaction {tx.id} pending; it rolls back unless confirmed within "
          f"{args.confirm_timeout:g} s: open a new connection to check, then run 'twinwall confirm' "
          f"('twinwall rollback' reverts now)")
    return 0
