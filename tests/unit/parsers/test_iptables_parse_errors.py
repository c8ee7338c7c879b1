"""parse_iptables_save refuses dumps iptables-restore would refuse, with one line naming the
source and the table: here, a table cut short before its COMMIT."""

from __future__ import annotations

import pytest

from twinwall.errors import InputError
from twinwall.parsers.iptables_save import parse_iptables_save

HEAD = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s 127.0.0.0/8 -j ACCEPT\n"


def test_complete_dump_parses() -> None:
    rs = parse_iptables_save(HEAD + "COMMIT\n", "ipv4", "rules.v4")
    assert rs.chain("filter", "INPUT").policy == "DROP"


@pytest.mark.parametrize("text", [
    HEAD,  # the last table: the file ends where COMMIT should be
    HEAD + "-A INPUT -p tcp --dport 22 -j ACCEPT",  # cut in the middle of the last line
    "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n" + HEAD + "# Completed on Mon\n",
])
def test_table_without_commit_at_the_end_is_refused(text: str) -> None:
    with pytest.raises(InputError) as info:
        parse_iptables_save(text, "ipv4", "rules.v4")
    assert str(info.value) == "rules.v4: table filter has no COMMIT (truncated dump?)"


def test_table_opened_before_the_last_one_is_committed_is_refused() -> None:
    text = HEAD + "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n"
    with pytest.raises(InputError) as info:
        parse_iptables_save(text, "ipv6", "rules.v6")
    assert str(info.value) == "rules.v6: line 6: table filter has no COMMIT before '*nat' (truncated dump?)"


def test_commit_with_crlf_and_blanks_still_counts() -> None:
    text = (HEAD + "COMMIT  \n\n").replace("\n", "\r\n")
    assert parse_iptables_save(text, "ipv4", "rules.v4").chain("filter", "INPUT") is not None


def test_port_out_of_range_wording() -> None:
    # the wording the nft parser follows for the same mistake
    with pytest.raises(InputError, match=r"^rules\.v4: filter INPUT rule 2: port out of range: 70000: "):
        _ = parse_iptables_save(HEAD + "-A INPUT -p tcp --dport 70000 -j ACCEPT\nCOMMIT\n", "ipv4",
                                "rules.v4").chain("filter", "INPUT").rules


def _rule(line: str):
    return parse_iptables_save(HEAD + line + "\nCOMMIT\n", "ipv4", "rules.v4").chain("filter", "INPUT").rules[1]


@pytest.mark.parametrize("line, wording", [
    ("-A INPUT -p tcp -m tcp --dpot 22 -j ACCEPT", "-m tcp: no option --dpot"),
    ("-A INPUT -p udp --dports 53 -j ACCEPT", "-m udp: no option --dports"),
    ("-A INPUT -p tcp -m multiport --dpots 80,443 -j ACCEPT", "-m tcp -m multiport: no option --dpots "),
    ("-A INPUT -p icmp --icmpv6-type 128 -j ACCEPT", "-m icmp: no option --icmpv6-type"),
])
def test_an_option_no_loaded_match_has_is_refused_not_read_as_may_match(line: str, wording: str) -> None:
    # iptables-restore refuses each of these ("unknown option"); reading one as "may match"
    # would hide the typo behind an audit that looks plausible
    with pytest.raises(InputError) as info:
        _ = _rule(line)
    assert str(info.value).startswith(f"rules.v4: filter INPUT rule 2: {wording}")
    assert str(info.value).endswith(": " + line)


@pytest.mark.parametrize("typed, spelled", [
    # getopt_long, which iptables uses, takes an unambiguous abbreviation for the option
    ("-A INPUT -p tcp --dpo 22 -j ACCEPT", "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"),
    ("-A INPUT -p tcp -m multiport --dports 80 --sy -j ACCEPT",
     "-A INPUT -p tcp -m multiport --dports 80 -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT"),
    # an option of "-p tcp"'s implicit tcp match after another match's
    ("-A INPUT -p tcp -m state --state NEW --dport 22 -j ACCEPT",
     "-A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -j ACCEPT"),
])
def test_abbreviations_and_options_of_earlier_matches_keep_their_meaning(typed: str, spelled: str) -> None:
    rule = _rule(typed)
    assert not rule.unknown
    assert [sorted(a) for a in rule.alternatives] == [sorted(a) for a in _rule(spelled).alternatives]


def test_an_option_an_open_ended_match_may_own_stays_undecided() -> None:
    # conntrack has options twinwall does not decide: after it the option may be its own
    rule = _rule("-A INPUT -p tcp -m conntrack --ctstate NEW -m tcp --ctdir ORIGINAL -j ACCEPT")
    assert rule.unknown
