"""The ACL file (broker/acl.py): qpidd's syntax, first-match-wins, and the cached publish check."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.acl import (
    NO_RULE,
    PUBLISH_CACHE_MAX,
    Acl,
    AclError,
    Decision,
    identity,
    load_or_keep,
)


def parse(text: str) -> Acl:
    return Acl.parse(text, "t.acl")


def allowed(acl: Acl, user: str, action: str, obj: str, **props: object) -> bool:
    return acl.check(user, action, obj, props).allowed


# --- identities ------------------------------------------------------------------------------


def test_identity_adds_the_realm_to_a_bare_name_only() -> None:
    assert identity("bob") == "bob@QPID"
    assert identity("bob@QPID") == "bob@QPID"
    assert identity("bob@EXAMPLE.COM") == "bob@EXAMPLE.COM"


def test_the_seeds_example_lets_that_user_do_everything_and_nobody_else() -> None:
    acl = parse("acl allow admin@QPID all all\n")
    for action, obj in [("access", "connection"), ("consume", "queue"), ("update", "broker")]:
        assert acl.check("admin", action, obj) == Decision(True, False, "t.acl:1")
        assert acl.check("admin@QPID", action, obj).allowed
        assert acl.check("bob", action, obj) == Decision(False, False, NO_RULE)
    assert acl.allows_publish("admin", "amq.topic", "a.b")
    assert not acl.allows_publish("bob", "amq.topic", "a.b")


def test_rules_may_name_users_with_or_without_the_realm() -> None:
    acl = parse(
        "acl allow bob consume queue\nacl allow carol@QPID consume queue\n"
        "acl allow dave@OTHER consume queue\n"
    )
    assert allowed(acl, "bob@QPID", "consume", "queue")
    assert allowed(acl, "bob", "consume", "queue")
    assert allowed(acl, "carol", "consume", "queue")
    assert allowed(acl, "dave@OTHER", "consume", "queue")
    assert not allowed(acl, "dave", "consume", "queue")  # dave@QPID is someone else


# --- the file's forms ------------------------------------------------------------------------


def test_groups_continuation_and_groups_of_groups() -> None:
    acl = parse(
        "group admins alice bob@QPID \\\n"
        "    carol \\\n"
        "    dave\\\n"
        "    erin\n"
        "group everyone admins frank\n"
        "acl allow everyone consume queue\n"
    )
    admins = {"alice@QPID", "bob@QPID", "carol@QPID", "dave@QPID", "erin@QPID"}
    assert acl.groups["admins"] == admins
    assert acl.groups["everyone"] == admins | {"frank@QPID"}
    for user in ("alice", "erin", "frank"):
        assert allowed(acl, user, "consume", "queue")
    assert not allowed(acl, "grace", "consume", "queue")


def test_a_group_naming_itself_is_ignored_as_in_qpidd() -> None:
    acl = parse("group g alice g\n")
    assert acl.groups["g"] == {"alice@QPID"}


def test_comments_blank_lines_and_crlf() -> None:
    acl = parse(
        "# a whole-line comment\r\n"
        "\r\n"
        "   # an indented comment\n"
        "   \t \n"
        "group g alice \\   # a comment after the continuation\n"
        "# a comment inside the member list\n"
        "    bob   # a trailing comment\n"
        "acl allow g publish exchange routingkey=a.# # a comment; a.# is not one\n"
        "acl allow all publish exchange routingkey=#\n"
    )
    assert acl.groups["g"] == {"alice@QPID", "bob@QPID"}
    assert [r.line for r in acl.rules] == [8, 9]
    assert acl.check("bob", "publish", "exchange", {"routingkey": "a.b"}).rule == "t.acl:8"
    assert acl.check("bob", "publish", "exchange", {"routingkey": "b"}).rule == "t.acl:9"


def test_an_empty_file_denies_everything() -> None:
    acl = parse("")
    assert acl.rules == ()
    assert acl.check("bob", "access", "connection") == Decision(False, False, NO_RULE)


def test_no_object_means_every_object() -> None:
    acl = parse("acl allow bob create\n")
    assert allowed(acl, "bob", "create", "queue", name="q")
    assert allowed(acl, "bob", "create", "exchange", name="x")
    assert not allowed(acl, "bob", "delete", "queue", name="q")


def test_all_as_subject_action_and_object() -> None:
    acl = parse(
        "acl deny bob all queue\n"
        "acl allow all consume all\n"
        "acl allow carol all exchange\n"
        "acl deny all all\n"
    )
    assert not allowed(acl, "bob", "consume", "queue")
    assert allowed(acl, "bob", "consume", "exchange")
    assert allowed(acl, "anyone", "consume", "queue")
    assert allowed(acl, "carol", "delete", "exchange")
    assert not allowed(acl, "carol", "delete", "queue")


def test_qpidds_other_actions_and_objects_are_known_words() -> None:
    acl = parse(
        "acl allow bob move queue\nacl allow bob redirect queue\nacl allow bob reroute queue\n"
        "acl allow bob access method name=echo\nacl allow bob access query\n"
        "acl allow bob create link\n"
    )
    for action in ("move", "redirect", "reroute"):
        assert allowed(acl, "bob", action, "queue")
    assert allowed(acl, "bob", "access", "method", name="echo")
    assert allowed(acl, "bob", "access", "query")
    assert allowed(acl, "bob", "create", "link")


# --- deciding --------------------------------------------------------------------------------


def test_the_first_matching_rule_decides_and_no_match_denies() -> None:
    acl = parse(
        "acl deny-log bob consume queue name=secret\n"
        "acl allow-log bob consume queue\n"
        "acl allow all consume queue name=public\n"
    )
    assert acl.check("bob", "consume", "queue", {"name": "secret"}) == Decision(
        False, True, "t.acl:1"
    )
    assert acl.check("bob", "consume", "queue", {"name": "other"}) == Decision(
        True, True, "t.acl:2"
    )
    assert acl.check("alice", "consume", "queue", {"name": "public"}) == Decision(
        True, False, "t.acl:3"
    )
    assert acl.check("alice", "consume", "queue", {"name": "other"}) == Decision(
        False, False, NO_RULE
    )


def test_a_catch_all_allow_at_the_end_makes_allow_the_default() -> None:
    acl = parse("acl deny bob@QPID all all\nacl allow all all\n")
    assert not allowed(acl, "bob", "consume", "queue")
    assert allowed(acl, "alice", "consume", "queue")


def test_a_property_the_request_does_not_carry_makes_the_rule_not_match() -> None:
    acl = parse(
        "acl allow all publish all durable=false\n"
        "acl deny all publish exchange\n"
        "acl allow all all\n"
    )
    # qpidd: the publish lookup carries name and routingkey only, so line 1 never matches it
    decision = acl.check("bob", "publish", "exchange", {"name": "x", "routingkey": "k"})
    assert decision.rule == "t.acl:2"
    assert not acl.allows_publish("bob", "x", "k")
    assert acl.check("bob", "publish", "queue", {"durable": False}).rule == "t.acl:1"
    assert acl.check("bob", "publish", "queue").rule == "t.acl:3"


def test_name_wildcards() -> None:
    acl = parse(
        "acl allow bob create queue name=tmp.*\n"
        "acl allow bob create queue name=exact\n"
        "acl allow carol create queue name=*\n"
    )
    assert allowed(acl, "bob", "create", "queue", name="tmp.1")
    assert allowed(acl, "bob", "create", "queue", name="tmp.")
    assert not allowed(acl, "bob", "create", "queue", name="tmp")
    assert allowed(acl, "bob", "create", "queue", name="exact")
    assert not allowed(acl, "bob", "create", "queue", name="exactly")
    assert allowed(acl, "carol", "create", "queue", name="")
    assert allowed(acl, "carol", "create", "queue", name="anything")


@pytest.mark.parametrize(
    ("pattern", "key", "match"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a", False),
        ("a.*", "a.b.c", False),
        ("a.#", "a", True),
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("*.b.#", "x.b", True),
        ("*.b.#", "b", False),
        ("#", "", True),
        ("*", "", False),
        ("a*", "ab", False),  # no prefix wildcard in a routing key: topic words only
    ],
)
def test_routingkey_is_a_topic_pattern(pattern: str, key: str, match: bool) -> None:
    acl = parse(f"acl allow bob publish exchange routingkey={pattern}\n")
    assert allowed(acl, "bob", "publish", "exchange", name="x", routingkey=key) is match
    assert acl.allows_publish("bob", "x", key) is match


def test_booleans_and_policytype() -> None:
    acl = parse(
        "acl allow bob create queue durable=true exclusive=false policytype=ring\n"
        "acl allow bob create exchange autodelete=true\n"
    )
    assert allowed(acl, "bob", "create", "queue", durable=True, exclusive=False, policytype="ring")
    assert allowed(
        acl, "bob", "create", "queue", durable="true", exclusive="false", policytype="ring"
    )
    assert not allowed(
        acl, "bob", "create", "queue", durable=False, exclusive=False, policytype="ring"
    )
    assert not allowed(acl, "bob", "create", "queue", durable=True, exclusive=False)
    assert allowed(acl, "bob", "create", "exchange", autodelete=True, name="x")


def test_amq_default_names_the_default_exchange() -> None:
    acl = parse(
        "acl allow bob publish exchange name=amq.default routingkey=orders\n"
        "acl allow bob access queue name=amq.default\n"
    )
    assert acl.allows_publish("bob", "", "orders")
    assert allowed(acl, "bob", "publish", "exchange", name="", routingkey="orders")
    assert not acl.allows_publish("bob", "", "other")
    assert not acl.allows_publish("bob", "amq.topic", "orders")
    assert not allowed(acl, "bob", "access", "queue", name="")  # only exchanges have a default


def test_queue_limits_demote_an_allow_as_in_qpidd() -> None:
    acl = parse(
        "acl allow-log bob create queue queuemaxsizeupperlimit=1000 queuemaxcountlowerlimit=10\n"
        "acl allow carol create queue maxqueuesize=0\n"  # an alias; 0 means no limit
        "acl allow dave create queue maxqueuecount=5\n"
        "acl allow all all\n"
    )
    ok = acl.check("bob", "create", "queue", {"maxqueuesize": 1000, "maxqueuecount": 10})
    assert ok == Decision(True, True, "t.acl:1")
    too_big = acl.check("bob", "create", "queue", {"maxqueuesize": 1001, "maxqueuecount": 10})
    assert too_big == Decision(False, True, "t.acl:1")
    too_few = acl.check("bob", "create", "queue", {"maxqueuesize": 5, "maxqueuecount": 9})
    assert too_few == Decision(False, True, "t.acl:1")
    junk = acl.check("bob", "create", "queue", {"maxqueuesize": "lots", "maxqueuecount": 10})
    assert not junk.allowed
    # the request does not say its size: the rule does not match, the next one decides
    assert acl.check("bob", "create", "queue", {"maxqueuecount": 10}).rule == "t.acl:4"
    assert acl.check("carol", "create", "queue", {"maxqueuesize": 10**12}).rule == "t.acl:2"
    assert acl.check("carol", "create", "queue", {"maxqueuesize": 10**12}).allowed
    assert not acl.check("dave", "create", "queue", {"maxqueuecount": 6}).allowed
    assert acl.check("dave", "create", "queue", {"maxqueuecount": 5}).allowed


def test_user_substitution_in_names_and_keys() -> None:
    acl = parse(
        "acl allow all create queue name=${user}-tmp-*\n"
        "acl allow all publish exchange name=amq.topic routingkey=users.${userdomain}.#\n"
        "acl allow all consume queue queuename=${domain}.q\n"
    )
    assert allowed(acl, "bob", "create", "queue", name="bob-tmp-1")
    assert not allowed(acl, "alice", "create", "queue", name="bob-tmp-1")
    assert allowed(acl, "bob.smith", "create", "queue", name="bob_smith-tmp-1")
    assert acl.allows_publish("bob", "amq.topic", "users.bob_QPID.x")
    assert not acl.allows_publish("alice", "amq.topic", "users.bob_QPID.x")
    assert allowed(acl, "carol@EXAMPLE.COM", "consume", "queue", queuename="EXAMPLE_COM.q")


def test_host_all_and_prefix() -> None:
    acl = parse(
        "acl allow bob access connection host=127.0.0.*\n"
        "acl allow carol access connection host=all\n"
    )
    assert allowed(acl, "bob", "access", "connection", host="127.0.0.1")
    assert not allowed(acl, "bob", "access", "connection", host="10.0.0.1")
    assert allowed(acl, "carol", "access", "connection", host="10.0.0.1")


def test_check_refuses_words_it_does_not_know() -> None:
    acl = parse("acl allow all all\n")
    with pytest.raises(ValueError, match="unknown ACL action 'consme'"):
        acl.check("bob", "consme", "queue")
    with pytest.raises(ValueError, match="unknown ACL object 'queues'"):
        acl.check("bob", "consume", "queues")
    with pytest.raises(ValueError, match="unknown ACL request property 'nmae'"):
        acl.check("bob", "consume", "queue", {"nmae": "q"})


# --- errors ----------------------------------------------------------------------------------

ERRORS = [
    ("acl allow bob\n", "t.acl:1: an acl rule needs a permission, a subject and an action:"
     " acl PERMISSION SUBJECT ACTION [OBJECT [PROPERTY=VALUE ...]]"),
    ("acl permit bob all\n", "t.acl:1: unknown permission permit"
     " (allow, allow-log, deny or deny-log)"),
    ("\nacl allow bob eat queue\n", "t.acl:2: unknown action eat (all, access, bind, consume,"
     " create, delete, move, publish, purge, redirect, reroute, unbind, update)"),
    ("acl allow bob consume queues\n", "t.acl:1: unknown object queues"
     " (all, broker, connection, exchange, link, method, query, queue)"),
    ("acl allow bob consume name=q\n", "t.acl:1: property name=q needs an object before it"),
    ("acl allow bob consume queue nmae=q\n", "t.acl:1: unknown property nmae"),
    ("acl allow bob consume queue name\n", "t.acl:1: bad property name: it must be NAME=VALUE"),
    ("acl allow bob consume queue name=\n", "t.acl:1: bad property name=: it must be NAME=VALUE"),
    ("acl allow bob consume queue =q\n", "t.acl:1: bad property =q: it must be NAME=VALUE"),
    ("acl allow bob consume queue name=a name=b\n", "t.acl:1: property name is given twice"),
    ("acl allow bob create queue maxqueuesize=1 queuemaxsizeupperlimit=2\n",
     "t.acl:1: property queuemaxsizeupperlimit is given twice"),
    ("acl allow bob create queue durable=yes\n",
     "t.acl:1: durable=yes: durable is true or false"),
    ("acl allow bob create queue policytype=lifo\n",
     "t.acl:1: policytype=lifo: policytype is one of ring, self-destruct, reject"),
    ("acl allow bob create queue maxqueuesize=-1\n",
     "t.acl:1: queuemaxsizeupperlimit=-1: queuemaxsizeupperlimit is a number from 0 to"
     " 9223372036854775807"),
    ("acl allow bob create queue queuemaxcountlowerlimit=9223372036854775808\n",
     "t.acl:1: queuemaxcountlowerlimit=9223372036854775808: queuemaxcountlowerlimit is a"
     " number from 0 to 9223372036854775807"),
    ("acl allow bob access connection host=10.0.0.1,10.0.0.9\n",
     "t.acl:1: host=10.0.0.1,10.0.0.9: host ranges are not supported;"
     " give one host, a prefix ending in '*', or all"),
    ("acl deny all all queue\n",
     "t.acl:1: nothing may follow 'acl deny all all': it decides every request"),
    ("acl allow bob@ all\n", "t.acl:1: user name bob@ needs a name and a realm around '@'"),
    ("acl allow @QPID all\n", "t.acl:1: user name @QPID needs a name and a realm around '@'"),
    ("acl allow a\x01b all\n", 't.acl:1: "a\\x01b" is not a user name'),
    ("acl allow bob all \\\n", "t.acl:1: '\\' continues only group lines; an acl rule is one line"),
    ("group\n", "t.acl:1: 'group' needs a name and members: group NAME MEMBER..."),
    ("group \\\n g a\n", "t.acl:1: 'group' needs a name and members: group NAME MEMBER..."),
    ("group g\n", "t.acl:1: group g has no members"),
    ("group all a\n", "t.acl:1: 'all' is a keyword, not a group name"),
    ("group a.b c\n", "t.acl:1: group name a.b may hold only letters, digits, '-' and '_'"),
    ("group g a\ngroup g b\n", "t.acl:2: duplicate group g (first defined on line 1)"),
    ("group g a all\n", "t.acl:1: 'all' cannot be a group member"),
    ("group g a b=c\n", "t.acl:1: b=c is not a user name"),
    ("group outer inner\ngroup inner a\n",
     "t.acl:2: group inner is defined after line 1 used the name (there it meant the user"
     " inner@QPID); define groups before using them"),
    ("acl allow admins all all\ngroup admins a\n",
     "t.acl:2: group admins is defined after line 1 used the name (there it meant the user"
     " admins@QPID); define groups before using them"),
    ("group g a \\\n", "t.acl:1: the file ends where a '\\' says group g continues"),
    ("group g a \\\n# only a comment follows\n",
     "t.acl:1: the file ends where a '\\' says group g continues"),
    ("group g a \\\n\nacl allow g all\n",
     "t.acl:2: blank line where line 1 ('\\' at its end) continues group g"),
    ("group g a \\\nacl allow g all\n",
     "t.acl:2: line 1 ends in '\\', so this line continues group g, but it starts with 'acl'"),
    ("group g a \\\n  \\\n b\n", "t.acl:2: a line holds nothing but '\\'"),
    ("quota connections 10 bob\n",
     "t.acl:1: 'quota' rules are not supported (qstore has no per-user quotas)"),
    ("allow bob all\n", "t.acl:1: a line must start with 'group' or 'acl', not allow"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_a_bad_file_is_one_line_naming_file_line_and_problem(text: str, message: str) -> None:
    with pytest.raises(AclError) as caught:
        parse(text)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_load_reads_a_file_and_names_it_in_decisions_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "broker.acl"
    path.write_text("# the seed's example\nacl allow admin@QPID all all\n")
    acl = Acl.load(path)
    assert acl.source == str(path)
    assert acl.check("admin", "purge", "queue").rule == f"{path}:2"

    path.write_bytes(b"acl allow bob all\nacl allow \xff all\n")
    with pytest.raises(AclError) as caught:
        Acl.load(path)
    assert str(caught.value) == f"{path}:2: not UTF-8 text"

    missing = tmp_path / "missing.acl"
    with pytest.raises(AclError) as caught:
        Acl.load(missing)
    assert str(caught.value) == f"{missing}: cannot read the ACL file: No such file or directory"


# --- reload ----------------------------------------------------------------------------------


def test_load_or_keep_takes_a_good_file_and_keeps_the_old_rules_on_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test.acl.reload")
    path = tmp_path / "broker.acl"
    path.write_text("acl allow bob all all\n")
    with caplog.at_level(logging.INFO, logger="test.acl.reload"):
        first, problem = load_or_keep(path, None, logger)
    assert problem is None
    assert first is not None and allowed(first, "bob", "purge", "queue")
    assert caplog.messages == [f"ACL: read 1 rules and 0 groups from {path}"]

    caplog.clear()
    path.write_text("acl allow alice all all\nacl allow bob eat queue\n")
    with caplog.at_level(logging.INFO, logger="test.acl.reload"):
        kept, problem = load_or_keep(path, first, logger)
    assert problem is not None and problem.startswith(f"{path}:2: unknown action eat")
    assert kept is first
    assert caplog.messages == [
        f"ACL: {path}:2: unknown action eat (all, access, bind, consume, create, delete, move,"
        f" publish, purge, redirect, reroute, unbind, update); the rules read before from {path}"
        " stay in force"
    ]
    assert [r.levelname for r in caplog.records] == ["ERROR"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.acl.reload"):
        assert load_or_keep(tmp_path / "nope.acl", None, logger)[0] is None
    assert caplog.messages == [
        f"ACL: {tmp_path / 'nope.acl'}: cannot read the ACL file: No such file or directory;"
        " no ACL was loaded before, so none is in force"
    ]

    caplog.clear()
    path.write_text("acl allow alice all all\nacl deny alice consume queue\n")
    with caplog.at_level(logging.INFO, logger="test.acl.reload"):
        second, _ = load_or_keep(path, first, logger)
    assert second is not None and second is not first
    assert allowed(second, "alice", "consume", "queue")
    assert not allowed(second, "bob", "consume", "queue")
    assert caplog.messages[1] == (
        f"ACL: {path}:2: this rule never decides anything: line 1 decides every request it"
        " could match"
    )


def test_dead_rules_are_reported() -> None:
    acl = parse(
        "group g alice bob\n"
        "acl allow g consume queue\n"
        "acl deny alice consume queue name=x\n"  # g decides every consume queue for alice
        "acl deny carol consume queue\n"  # carol is not in g: alive
        "acl allow bob consume queue name=y durable=true\n"
        "acl deny all all\n"
        "acl allow carol all all\n"
    )
    assert acl.warnings == (
        "t.acl:3: this rule never decides anything: line 2 decides every request it could match",
        "t.acl:5: this rule never decides anything: line 2 decides every request it could match",
        "t.acl:7: this rule never decides anything: line 6 decides every request it could match",
    )


# --- words for people ------------------------------------------------------------------------


def test_denial_names_user_action_object_and_properties() -> None:
    acl = parse("")
    assert acl.denial("bob", "consume", "queue", {"name": "orders"}) == (
        "ACL denied bob@QPID consume queue name=orders"
    )
    assert acl.denial("bob@QPID", "publish", "exchange", {"routingkey": "a.b", "name": ""}) == (
        'ACL denied bob@QPID publish exchange name="" routingkey=a.b'
    )
    assert acl.denial("bob", "access", "connection") == "ACL denied bob@QPID access connection"
    assert acl.denial("bob", "create", "queue", {"name": "q\nforged line", "durable": True}) == (
        'ACL denied bob@QPID create queue name="q\\nforged line" durable=true'
    )


def test_log_line_in_qpidds_words_with_the_rule() -> None:
    acl = parse("acl deny-log bob consume queue\n")
    props = {"name": "orders"}
    decision = acl.check("bob", "consume", "queue", props)
    assert acl.log_line(decision, "bob", "consume", "queue", props) == (
        "ACL Deny id:bob@QPID action:consume ObjectType:queue Name:orders (t.acl:1)"
    )
    allow = Decision(True, True, "t.acl:9")
    assert acl.log_line(allow, "bob", "publish", "exchange", {"name": "x", "routingkey": "k"}) == (
        "ACL Allow id:bob@QPID action:publish ObjectType:exchange Name:x routingkey=k (t.acl:9)"
    )


# --- the per-message publish check -----------------------------------------------------------


def test_publish_decision_carries_the_log_flag() -> None:
    acl = parse("acl allow-log bob publish exchange name=amq.topic\nacl deny-log all all\n")
    assert acl.publish_decision("bob", "amq.topic", "k") == Decision(True, True, "t.acl:1")
    assert acl.publish_decision("bob", "amq.topic", "k") == Decision(True, True, "t.acl:1")
    assert acl.publish_decision("bob", "amq.direct", "k") == Decision(False, True, "t.acl:2")


def test_the_publish_cache_stays_bounded_and_right() -> None:
    acl = parse("acl allow bob publish exchange routingkey=a.*\n")
    for i in range(PUBLISH_CACHE_MAX + 5):
        assert acl.allows_publish("bob", "x", f"a.{i}")
        assert len(acl._publish) <= PUBLISH_CACHE_MAX
    assert acl.allows_publish("bob", "x", "a.0")
    assert not acl.allows_publish("bob", "x", "b.0")
    assert not acl.allows_publish("alice", "x", "a.0")


_USERS = ["alice", "bob", "bob@QPID", "carol@QPID", "carol", "dave@OTHER", "erin"]
_SUBJECTS = ["alice", "bob@QPID", "carol", "dave@OTHER", "g1", "g2", "all"]
_rule = st.tuples(
    st.sampled_from(["allow", "deny", "allow-log", "deny-log"]),
    st.sampled_from(_SUBJECTS),
    st.sampled_from(["publish", "all", "consume"]),
    st.sampled_from(["exchange", "all", "queue", ""]),
    st.sampled_from(["", "name=amq.topic", "name=amq.*", "name=*", "name=amq.default", "name=x"]),
    st.sampled_from(["", "routingkey=#", "routingkey=a.*", "routingkey=a.#", "routingkey=*.b",
                     "routingkey=a.b", "routingkey=*", "routingkey=users.${user}.#"]),
    st.sampled_from(["", "", "", "durable=true", "queuename=q"]),
)  # fmt: skip
_lookup = st.tuples(
    st.sampled_from(_USERS),
    st.sampled_from(["amq.topic", "amq.direct", "", "x", "amq.default"]),
    st.sampled_from(["", "a", "a.b", "a.b.c", "b", "x.b", "users.bob.x", "users.carol"]),
)


def _rule_line(rule: tuple[str, ...]) -> str:
    perm, subject, action, obj, *props = rule
    if subject == "all" and action == "all":
        return f"acl {perm} all all"  # qpidd allows nothing after it
    words = [w for w in props if w]
    if not obj:
        words = []  # properties need an object before them
    return " ".join(["acl", perm, subject, action, obj, *words]).strip()


@settings(max_examples=300, deadline=None)
@given(st.lists(_rule, max_size=12), st.lists(_lookup, min_size=1, max_size=25))
def test_allows_publish_agrees_with_check(
    rules: list[tuple[str, ...]], lookups: list[tuple[str, str, str]]
) -> None:
    text = "group g1 alice bob\ngroup g2 g1 carol\n" + "\n".join(map(_rule_line, rules))
    acl = parse(text)
    for _ in range(2):  # the second pass answers from the cache
        for user, exchange, key in lookups:
            want = acl.check(user, "publish", "exchange", {"name": exchange, "routingkey": key})
            assert acl.allows_publish(user, exchange, key) is want.allowed
            assert acl.publish_decision(user, exchange, key) == want
