"""AddressSets: each distinct address list once, however it is handed over."""

from __future__ import annotations

from twinwall.analysis.address_sets import AddressSets


def test_each_distinct_list_is_one_entry_whatever_object_holds_it():
    sets = AddressSets()
    long = [f"2001:db8::{k:x}/128" for k in range(1, 2001)]
    first = sets.ref(long)
    assert sets.ref(long) == first  # the same object
    assert sets.ref(list(long)) == first  # an equal copy
    assert sets.ref(tuple(long)) == first  # an equal tuple
    # the same length and ends, another middle: another list
    middle = long[:1000] + ["2001:db8:1::1/128"] + long[1001:]
    other = sets.ref(middle)
    assert other != first and sets.ref(tuple(middle)) == other
    assert sets.ref(long[:-1]) not in (first, other)  # (a prefix of it: another length)
    short = ["192.0.2.0/24", "198.51.100.7/32"]
    small = sets.ref(short)
    assert sets.ref(tuple(short)) == small and sets.ref(short[:1]) != small
    assert sets.ref([]) == sets.ref(()) not in (first, other, small)
    assert sets.lists[first] == long and sets.lists[other] == middle and sets.lists[small] == short
    assert len(sets.lists) == 6  # long, middle, its prefix, short, its first, empty
    assert all(isinstance(x, list) for x in sets.lists)
