"""The command line: `parse_argv` and its inverse `format_argv`.

Grammar (the renderer emits it through `format_argv`)::

    unitgen-probe [GLOBAL OPTIONS] [TARGET]... [group LABEL [--need N|any|all] TARGET...]...
    TARGET = KIND SPEC [TARGET OPTIONS]

The word after a KIND is always its SPEC, and the word after an option that
takes a value is always that value (``--name VALUE`` or ``--name=VALUE``),
whatever they start with; so specs and labels that begin with ``-`` need no
quoting. The targets after ``group LABEL`` belong to that group, up to the
next ``group``: the group is ready when ``--need`` of them (default all)
answered; each target before the first group must answer on its own.
``--wait-at-most SECONDS`` after a target or after ``group LABEL`` makes
it optional: past that bound the wait goes on without it (wait.py).
`format_argv` writes every value as ``--option=VALUE``.
"""

from .targets import DEFAULT_TIMEOUT, KINDS, Group, Target, UsageError, need_of, seconds

PROG = "unitgen-probe"

# Options with a value; the flags; where they may stand.
_GLOBAL_VALUE = ("--deadline", "--slot")
_TARGET_VALUE = ("--name", "--status", "--body", "--ca-file", "--need", "--wait-at-most")
_GROUP_OPTIONS = ("--need", "--wait-at-most")
GROUP = "group"
_FLAGS = {"--once": "once", "--any": "any", "-v": "verbose", "--verbose": "verbose",
          "-q": "quiet", "--quiet": "quiet", "--json": "json",
          "-h": "help", "--help": "help", "--version": "version"}
_OPTIONS = _GLOBAL_VALUE + _TARGET_VALUE + ("--timeout", "--insecure") + tuple(_FLAGS)


class Invocation:
    """A parsed command line.

    Attributes: ``targets`` (tuple of `Target`: every target, in groups or
    not), ``groups`` (tuple of `Group`: the targets from the first group on
    are in exactly one of them), ``deadline`` (seconds, 0 =
    wait forever), ``timeout`` (the per-attempt timeout for targets without
    their own), and the flags ``once``, ``any``, ``verbose``, ``quiet``,
    ``json``, ``help``, ``version``.
    """

    __slots__ = ("targets", "groups", "deadline", "slot", "timeout", "once", "any", "verbose",
                 "quiet", "json", "help", "version")

    def __init__(self, targets=(), deadline=0.0, timeout=DEFAULT_TIMEOUT, groups=(), slot=0.0, **flags):
        self.groups = tuple(groups)
        self.slot = slot
        self.targets = tuple(targets) + tuple(t for g in self.groups for t in g.targets)
        self.deadline = deadline
        self.timeout = timeout
        for flag in set(_FLAGS.values()):
            setattr(self, flag, bool(flags.pop(flag, False)))
        if flags:
            raise TypeError(f"unknown flags: {', '.join(flags)}")

    def members(self):
        """(group or None, target) for every target, in the order of ``targets``."""
        alone = len(self.targets) - sum(len(g.targets) for g in self.groups)
        return [(None, t) for t in self.targets[:alone]] + [(g, t) for g in self.groups for t in g.targets]

    def timeout_for(self, target):
        """The per-attempt timeout of *target*: its own, else the global one."""
        return target.timeout if target.timeout is not None else self.timeout

    def __repr__(self):
        return "Invocation(" + ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__) + ")"


def parse_argv(argv):
    """Parse the arguments after the program name into an `Invocation`.

    Raises `UsageError` with a one-line message for anything malformed,
    including a target whose spec is invalid.
    """
    flags, globals_, pending = _read(list(argv))
    inv = Invocation(**flags)
    if inv.help or inv.version:
        return inv
    if not pending:
        raise UsageError("no target given")
    if inv.quiet and inv.verbose:
        raise UsageError("-q and -v exclude each other")
    inv.deadline = seconds(globals_.get("--deadline", 0), "--deadline", allow_zero=True)
    inv.slot = seconds(globals_.get("--slot", 0), "--slot", allow_zero=True)
    inv.timeout = seconds(globals_.get("--timeout", DEFAULT_TIMEOUT), "--timeout", allow_zero=False)
    alone, groups, labels = [], [], set()
    for kind, spec, options in pending:
        if kind == GROUP:
            if spec in labels:
                raise UsageError(f"group {spec}: given twice")
            labels.add(spec)
            groups.append((spec, need_of(options.get("--need", "all"), spec), options.get("--wait-at-most"), []))
            continue
        if "--need" in options:
            raise UsageError("--need applies to a group, not to a target")
        target = Target(kind, spec, **{opt[2:].replace("-", "_"): value for opt, value in options.items()})
        (groups[-1][3] if groups else alone).append(target)
    inv.groups = tuple(Group(label, members, need, bound) for label, need, bound, members in groups)
    inv.targets = tuple(alone) + tuple(t for g in inv.groups for t in g.targets)
    _check_bounds(inv)
    return inv


def _check_bounds(inv):
    """Optional targets and groups: a bound the deadline leaves room for, and not with --any."""
    bounds = [t.wait_at_most for t in inv.targets] + [g.wait_at_most for g in inv.groups]
    bounds = [b for b in bounds if b is not None]
    if not bounds:
        return
    if inv.any:
        raise UsageError("--wait-at-most has no meaning with --any (one answer is enough already)")
    if inv.deadline and max(bounds) >= inv.deadline:
        raise UsageError(f"--wait-at-most {max(bounds):g} is not below --deadline {inv.deadline:g}: "
                         "the deadline would end the wait first and the start would never happen")


def _read(words):
    """Sort the words into flags, global option values, and the targets:
    ({flag: True}, {option: value}, [(kind, spec, {option: value}), ...])."""
    flags, globals_, pending = {}, {}, []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-"):
            if word not in KINDS and word != GROUP:
                raise UsageError(f"unknown kind {word!r} (expected {', '.join(KINDS)}, or group)"
                                 + _did_you_mean(word, KINDS + (GROUP,)))
            if i == len(words):
                raise UsageError(f"{word}: the spec is missing")
            pending.append((word, words[i], {}))
            i += 1
            continue
        option, has_value, value = word.partition("=")
        if option not in _OPTIONS:
            raise UsageError(f"unknown option {option}" + _did_you_mean(option, _OPTIONS))
        takes_value = option not in _FLAGS and option != "--insecure"
        if has_value and not takes_value:
            raise UsageError(f"{option} takes no value")
        if takes_value and not has_value:
            if i == len(words):
                raise UsageError(f"{option} needs a value")
            value = words[i]
            i += 1
        if option in _FLAGS:
            flags[_FLAGS[option]] = True
        elif option in _GLOBAL_VALUE or (option == "--timeout" and not pending):
            if pending:
                raise UsageError(f"{option} is a global option: put it before the first target")
            _set_once(globals_, option, value, "the command line")
        elif not pending:
            raise UsageError(f"{option} must follow the target it applies to")
        else:
            kind, spec, options = pending[-1]
            if kind == GROUP and option not in _GROUP_OPTIONS:
                raise UsageError(f"{option} must follow the target it applies to, not a group")
            _set_once(options, option, value if takes_value else True, f"{kind} {spec}")
    return flags, globals_, pending


def _set_once(options, option, value, where):
    if option in options:
        raise UsageError(f"{option} given twice for {where}")
    options[option] = value


def _did_you_mean(word, choices):
    import difflib

    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def format_argv(targets, *, deadline=None, timeout=None, any_=False, groups=(), slot=0.0):
    """The canonical argv (after the program name) that waits for *targets*
    (each on its own) and *groups* (`Group`s: need of each).

    Deterministic: the same targets and options give the same words.
    ``parse_argv(format_argv(ts, groups=gs, ...))`` has ``.groups ==
    tuple(gs)`` and ``.targets == tuple(ts)`` followed by the groups'
    targets, for any valid targets. *deadline* and *timeout* are seconds
    (None: the probe's default); *any_* makes one passing target (or group)
    enough; *slot* (seconds, 0: none) is waited once they are ready.
    """
    words = []
    if deadline is not None:
        words.append("--deadline=" + _seconds_text(seconds(deadline, "--deadline", allow_zero=True)))
    if timeout is not None:
        words.append("--timeout=" + _seconds_text(seconds(timeout, "--timeout", allow_zero=False)))
    if slot:
        words.append("--slot=" + _seconds_text(seconds(slot, "--slot", allow_zero=True)))
    if any_:
        words.append("--any")
    for target in targets:
        words += _target_words(target)
    for group in groups:
        words += [GROUP, group.label]
        if group.need != len(group.targets):
            words.append(f"--need={group.need}")
        if group.wait_at_most is not None:
            words.append("--wait-at-most=" + _seconds_text(group.wait_at_most))
        for target in group.targets:
            words += _target_words(target)
    return words


def _target_words(target):
    words = [target.kind, target.spec]
    if target.name is not None:
        words.append("--name=" + target.name)
    if target.status is not None:
        words.append("--status=" + ",".join(target.status))
    if target.body is not None:
        words.append("--body=" + target.body)
    if target.ca_file is not None:
        words.append("--ca-file=" + target.ca_file)
    if target.insecure:
        words.append("--insecure")
    if target.timeout is not None:
        words.append("--timeout=" + _seconds_text(target.timeout))
    if target.wait_at_most is not None:
        words.append("--wait-at-most=" + _seconds_text(target.wait_at_most))
    return words


def _seconds_text(number):
    text = repr(float(number))
    return text[:-2] if text.endswith(".0") else text


HELP = f"""\
usage: {PROG} [GLOBAL OPTIONS] [TARGET]... [group LABEL [--need N|any|all] TARGET...]...
       TARGET = KIND SPEC [TARGET OPTIONS]

Wait until every dependency answers, then exit 0: the ExecStartPre= of units
rendered by unitgen, and a tool to see why a service still waits.

kinds and specs (one pair per target):
  tcp HOST:PORT | tcp [V6ADDR]:PORT
                     connect; the name is resolved again at every attempt and
                     every address it resolves to is tried
  http URL           GET an http:// or https:// URL, following redirects;
                     ready when the final status is accepted (default 2xx)
  unix PATH          connect to a unix stream socket (@NAME: abstract socket)
  dns NAME           the name resolves
  exec COMMAND       COMMAND (one argument) run by /bin/sh -c exits 0; on
                     timeout its whole process group is killed

target options (after the target they apply to):
  --name LABEL       label used in messages (default: the spec without
                     URL credentials)
  --status LIST      http: accepted statuses, e.g. 200,204 or 2xx,301; an
                     accepted redirect status is not followed (default 2xx)
  --body REGEX       http: the body (first 1 MiB) must match (re.search)
  --ca-file PATH     https: verify the server against this CA bundle
  --insecure         https: do not verify the server's certificate
  --timeout SECONDS  per-attempt timeout of this target (exec: the
                     command's own timeout)
  --wait-at-most SECONDS
                     an optional target: once SECONDS have passed since the
                     probe started, the wait goes on without it, and the
                     probe exits 0 saying it starts degraded without it
                     (also after group LABEL: the group is optional)

groups (after the targets that must answer on their own):
  group LABEL        the targets that follow, up to the next group, form one
                     group, named LABEL in messages
  --need N|any|all   how many of the group's targets must answer (default all)

global options (before the first target; flags may stand anywhere):
  --deadline SECONDS give up and exit 1 after this long; 0 = wait forever
                     (default 0; units rendered by unitgen always set one)
  --slot SECONDS     once ready, wait this long more before exiting 0 (paced
                     release: unitgen gives each dependent of a service with
                     accepts: its own slot); not counted in --deadline
  --timeout SECONDS  per-attempt timeout of targets without their own
                     (default {DEFAULT_TIMEOUT:g}); before the first target it is global, after
                     a target it is that target's
  --once             one attempt per target, one result line each, exit 0/1
  --any              ready when any one target passes (default: all)
  -v, --verbose      log every attempt
  -q, --quiet        log only the final failure
  --json             result lines as JSON objects (target, label, kind, ok,
                     reason, latency_ms, attempts), one per target, on stdout
  -h, --help         show this help
  --version          show the version

All targets are checked in parallel. A target that passed is not checked
again: "all" means every target answered at least once since the probe
started. Dependencies come up one by one after a power cut; demanding that
all answer at the same instant would hold a service back for a flap the
service's own Restart= handles anyway.

Between attempts a target waits a random 0.10-0.20 s after the previous
attempt ended: at most 10 attempts a second, a dependency is noticed within
about 0.2 s of answering, and many units probing the same dependency do
not do so in lockstep. Log lines go to stderr, one per
change of a target's state plus a reminder every 30 s; under systemd the
same goes to STATUS= (needs NotifyAccess=exec or all).

exit status:
  0  ready (--once: every target passed, or one with --any)
  1  the deadline passed (--once: a target failed)
  2  usage or configuration error
  128+N  stopped by signal N (130 SIGINT, 143 SIGTERM)

examples:
  {PROG} tcp db.example:5432
  {PROG} --deadline 60 tcp 10.0.0.11:5432 --name db http https://api/health --status 2xx,301
  {PROG} --once --json unix /run/app.sock dns cache.example
  {PROG} exec 'pg_isready -h db -q' --timeout 5 --name postgres
  {PROG} tcp db:5432 group etcd --need 2 tcp h1:2379 tcp h2:2379 tcp h3:2379
"""
