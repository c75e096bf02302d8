"""Users from several Asterisk servers' hints: a union, with the stored ones kept
until every server has been read."""

from __future__ import annotations

from astpresence.domain.records import UserRecord
from astpresence.engine.users import UserDirectory


def hint(uid: str, *devices: str, exten: str = "") -> UserRecord:
    return UserRecord(uid, extension=exten or uid, context="internal",
                      devices=devices or (f"PJSIP/{uid}",), origin="hint")


def test_users_are_the_union_of_the_servers_hints() -> None:
    users = UserDirectory(nodes=("a", "b"))
    users.replace_stored([hint("1000"), hint("2000")])
    # a is read: 1000 is gone from it, but b may still have it.
    changed, gone = users.replace_hint_users([hint("2000", "PJSIP/2000")], "a")
    assert (changed, gone) == ([], []) and users.ids() == ["1000", "2000"]
    # b is read too: the stored users no longer count.
    changed, gone = users.replace_hint_users(
        [hint("2000", "PJSIP/2000b", exten="*802000"), hint("3000")], "b")
    assert gone == ["1000"] and users.ids() == ["2000", "3000"]
    both = users.get("2000")
    assert both is not None
    assert (both.extension, both.devices) == ("2000", ("PJSIP/2000", "PJSIP/2000b"))
    assert [u.id for u in changed] == ["2000", "3000"]
    assert users.nodes_with_device("2000", "PJSIP/2000b") == ["b"]
    assert users.nodes_with_device("2000", "PJSIP/2000") == ["a"]
    # 2000 leaves a's dialplan: still a user while b has it.
    assert users.replace_hint_users([], "a") == ([hint("2000", "PJSIP/2000b",
                                                       exten="*802000")], [])
    assert users.replace_hint_users([], "b")[1] == ["2000", "3000"]
    assert users.ids() == []


def test_a_hint_seen_live_on_one_server_adds_to_the_others() -> None:
    users = UserDirectory(nodes=("a", "b"), max_users=1)
    users.replace_hint_users([hint("2000")], "a")
    assert users.add_hint_user(hint("2000", "PJSIP/2000b"), "b")
    assert users.get("2000").devices == ("PJSIP/2000", "PJSIP/2000b")  # type: ignore[union-attr]
    assert not users.add_hint_user(hint("2000", "PJSIP/2000b"), "b")  # nothing new
    assert not users.add_hint_user(hint("2001"), "b")  # b is at max_users
    assert users.refused == 1 and "2001" not in users
