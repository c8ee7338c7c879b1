"""Hand forms and the canonical forms iptables-save prints back mean the same to twinwall
(issue 10). The canonical forms are pinned in _iptables_forms.FORMS; the netns test
(tests/netns/test_roundtrip_netns.py) reads them back from the real tools."""

import pytest

from _iptables_forms import FORMS, difference


@pytest.mark.parametrize("form", FORMS, ids=[f"{f.family}:{f.hand}" for f in FORMS])
def test_hand_and_canonical_forms_mean_the_same(form):
    assert difference(form, (form.hand,), form.canonical) == ""


def test_the_comparison_can_tell_forms_apart():
    form = FORMS[0]
    assert difference(form, ("-p tcp --syn -j DROP",), ("-p tcp ! --syn -j DROP",))
    assert difference(form, ("-p tcp --dport 22 -j DROP",), ("-p tcp --dport 22 -j ACCEPT",))
