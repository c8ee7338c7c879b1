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
