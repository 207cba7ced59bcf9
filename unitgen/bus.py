"""systemd's manager over D-Bus (dbus-next): reload, enable, jobs, unit state.

    async with bus.connect(address) as systemd:      # inside a running event loop
        print(await systemd.version())               # "252.38-1~deb12u1"
        job = await systemd.restart_unit("api.service")
        await systemd.wait([job], timeout=30)        # job.result: "done", "failed", ... or None
        state = await systemd.unit_state("api.service")

Every call goes to org.freedesktop.systemd1.Manager (org.freedesktop.systemd1(5))
as a plain method call: no introspection, one round trip each. Failures become
a BusError (no bus, permission denied, systemd not running) or, for one unit
systemd refuses (not found, bad setting, masked), a UnitError carrying
systemd's own message; never a traceback.

Jobs: ``Subscribe`` and a match on ``JobRemoved`` are set up before the first
job is queued. systemd may announce a job's end before the reply that names
the job reaches us, so a JobRemoved that arrives while a job call is in flight
is kept by job path until that call returns.
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Dict, Iterable, List, Literal, Optional, Sequence

from .errors import UnitgenError

SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"
SERVICE = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
UNIT_SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
CALL_TIMEOUT = 25.0  # libdbus's default reply timeout
RELOAD_TIMEOUT = 360.0  # what systemctl daemon-reload allows a big system
JOB_REMOVED_RULE = (f"type='signal',sender='{SERVICE}',path='{MANAGER_PATH}',"
                    f"interface='{MANAGER}',member='JobRemoved'")
# Job results (JobRemoved) that mean the job did what was asked.
JOB_OK = ("done", "skipped")
# The probe's STATUS= texts while it waits, and after it gave up (Restart= then tries again).
PROBE_WAITING = ("waiting for ", "gave up after ")

# siginfo_t's si_code for a child's end (ExecMainCode).
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3

_NOT_RUNNING = ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner")
_DENIED = ("org.freedesktop.DBus.Error.AccessDenied", "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired")
_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"


class BusError(UnitgenError):
    """systemd cannot be reached or refuses: no bus, permission denied, not running."""


class UnitError(BusError):
    """systemd refuses one unit (not found, bad unit file setting, masked ...)."""

    def __init__(self, unit: str, error: str, message: str):
        super().__init__(f"{unit}: {message}")
        self.unit = unit
        self.error = error  # the D-Bus error name, e.g. org.freedesktop.systemd1.BadUnitSetting
        self.message = message

    @property
    def not_found(self) -> bool:
        """systemd knows no such unit (or unit file)."""
        return self.error == _NO_SUCH_UNIT


def address(explicit: Optional[str] = None) -> str:
    """The bus to use: ``explicit``, else $DBUS_SYSTEM_BUS_ADDRESS, else the system bus."""
    return explicit or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS


JobKind = Literal["start", "restart", "stop"]


@dataclass
class Job:
    """A job systemd queued for us; ``result`` is None until systemd removes it."""

    path: str
    unit: str
    kind: JobKind
    removed: "asyncio.Future[str]" = field(repr=False, compare=False)  # JobRemoved's result

    @property
    def result(self) -> Optional[str]:
        """JobRemoved's result ("done", "failed", "timeout", "canceled", "dependency",
        "skipped"), None while the job is queued or running."""
        return self.removed.result() if self.removed.done() else None

    @property
    def ok(self) -> bool:
        return self.result in JOB_OK


@dataclass(frozen=True)
class UnitState:
    """What systemd says of one unit now."""

    unit: str
    load_state: str  # loaded, not-found, bad-setting, masked ...
    load_error: str  # systemd's message when not loaded, else ""
    active_state: str  # active, activating, failed, inactive ...
    sub_state: str  # running, start-pre, auto-restart, dead ...
    since: Optional[float]  # StateChangeTimestamp, seconds since the epoch; None if never
    active_since: Optional[float]  # ActiveEnterTimestamp: when it last became active; None if never
    n_restarts: int
    status_text: str  # STATUS= of the service (the probe's "waiting for db ...")
    main_pid: int
    result: str  # the service's last result: success, exit-code, timeout ...
    exec_main_code: int = 0  # how its last main process ended: 1 exited, 2 killed, 3 dumped core; 0 not yet
    exec_main_status: int = 0  # its exit status, or the signal that ended it

    @property
    def exit_reason(self) -> str:
        """How the last main process ended, e.g. ``exit status 3``, ``killed by SIGKILL``; "" if unknown."""
        if self.exec_main_code == CLD_EXITED:
            return f"exit status {self.exec_main_status}"
        if self.exec_main_code in (CLD_KILLED, CLD_DUMPED):
            try:
                name = signal.Signals(self.exec_main_status).name
            except ValueError:
                name = f"signal {self.exec_main_status}"
            return f"killed by {name}" + (" (core dumped)" if self.exec_main_code == CLD_DUMPED else "")
        return ""

    @property
    def active(self) -> bool:
        return self.active_state == "active"

    @property
    def waiting(self) -> bool:
        """Held back by its probe, or on its way up: not a failure.

        A unit restarting after its probe gave up is waiting; one restarting
        after its own process failed (auto-restart, no probe text) is not.
        """
        if self.active_state == "active":
            return False
        if self.status_text.startswith(PROBE_WAITING):
            return True
        return self.active_state == "activating" and self.sub_state != "auto-restart"


class Systemd:
    """One connection to systemd's manager; made by ``connect()``."""

    def __init__(self, bus, where: str):
        self._bus = bus
        self._where = where
        self._subscribed = False
        self._jobs: Dict[str, Job] = {}  # queued by us, not yet removed
        self._calls_in_flight = 0
        self._early: Dict[str, str] = {}  # JobRemoved seen while a job call was in flight
        bus.add_message_handler(self._on_message)

    # -- the manager ---------------------------------------------------------

    async def version(self) -> str:
        """Manager.Version, e.g. "252.38-1~deb12u1"."""
        return (await self._call("Get", "ss", [MANAGER, "Version"], interface=PROPERTIES))[0].value

    async def reload(self) -> None:
        """Reload every unit file (systemctl daemon-reload)."""
        await self._call("Reload", timeout=RELOAD_TIMEOUT)

    async def enable(self, units: Sequence[str]) -> List[str]:
        """Enable unit files ([Install] links); returns the links made."""
        return await self._unit_files("EnableUnitFiles", units)

    async def reenable(self, units: Sequence[str]) -> List[str]:
        """Disable and enable again: the links follow a changed [Install] section."""
        return await self._unit_files("ReenableUnitFiles", units)

    async def disable(self, units: Sequence[str]) -> List[str]:
        """Remove the [Install] links of units; a unit with neither file nor link is skipped."""
        removed = []
        for unit in units:
            try:
                body = await self._call("DisableUnitFiles", "asb", [[unit], False], unit=unit)
            except UnitError as exc:
                if exc.not_found:
                    continue
                raise
            removed += [path for _, path, _ in body[0]]
        return removed

    async def _unit_files(self, member: str, units: Sequence[str]) -> List[str]:
        if not units:
            return []
        body = await self._call(member, "asbb", [list(units), False, False],
                                unit=units[0] if len(units) == 1 else None)
        return [path for kind, path, _ in body[1] if kind == "symlink"]

    # -- jobs ----------------------------------------------------------------

    async def start_unit(self, unit: str) -> Job:
        return await self._queue("StartUnit", unit, "start")

    async def restart_unit(self, unit: str) -> Job:
        return await self._queue("RestartUnit", unit, "restart")

    async def stop_unit(self, unit: str) -> Optional[Job]:
        """Stop a unit; None when systemd has no such unit loaded (nothing runs)."""
        try:
            return await self._queue("StopUnit", unit, "stop")
        except UnitError as exc:
            if exc.not_found:
                return None
            raise

    async def reset_failed(self, unit: str) -> None:
        """Forget a unit's failed state (ResetFailedUnit); nothing to do if it is not loaded."""
        try:
            await self._call("ResetFailedUnit", "s", [unit], unit=unit)
        except UnitError as exc:
            if not exc.not_found:
                raise

    @staticmethod
    async def wait(jobs: Iterable[Job], timeout: float) -> None:
        """Wait up to ``timeout`` seconds until systemd has removed every job.

        A job still running then keeps running in systemd; its result stays None.
        """
        pending = [job.removed for job in jobs if not job.removed.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(timeout, 0.0))

    async def _queue(self, member: str, unit: str, kind: JobKind) -> Job:
        await self._subscribe()
        self._calls_in_flight += 1
        try:
            path = (await self._call(member, "ss", [unit, "replace"], unit=unit))[0]
        finally:
            self._calls_in_flight -= 1
        job = Job(path, unit, kind, asyncio.get_running_loop().create_future())
        if path in self._early:
            job.removed.set_result(self._early.pop(path))
        else:
            self._jobs[path] = job
        if not self._calls_in_flight:
            self._early.clear()  # other clients' jobs
        return job

    async def _subscribe(self) -> None:
        if self._subscribed:
            return
        await self._call("AddMatch", "s", [JOB_REMOVED_RULE], destination="org.freedesktop.DBus",
                         path="/org/freedesktop/DBus", interface="org.freedesktop.DBus")
        await self._call("Subscribe")
        self._subscribed = True

    def _on_message(self, message) -> None:
        if message.member != "JobRemoved" or message.interface != MANAGER:
            return
        _, path, _, result = message.body
        job = self._jobs.pop(path, None)
        if job is not None:
            job.removed.set_result(result)
        elif self._calls_in_flight:
            self._early[path] = result

    # -- units ---------------------------------------------------------------

    async def unit_state(self, unit: str) -> UnitState:
        """The state of one unit (loading its file if systemd has not yet)."""
        path = (await self._call("LoadUnit", "s", [unit], unit=unit))[0]
        props = (await self._call("GetAll", "s", [UNIT], path=path, interface=PROPERTIES))[0]
        if unit.endswith(".service"):
            props.update((await self._call("GetAll", "s", [UNIT_SERVICE], path=path, interface=PROPERTIES))[0])

        def value(name, default):
            return props[name].value if name in props else default

        def seconds(name):
            stamp = value(name, 0)
            return stamp / 1e6 if stamp else None

        return UnitState(
            unit=unit,
            load_state=value("LoadState", ""),
            load_error=value("LoadError", ["", ""])[1],
            active_state=value("ActiveState", ""),
            sub_state=value("SubState", ""),
            since=seconds("StateChangeTimestamp"),
            active_since=seconds("ActiveEnterTimestamp"),
            n_restarts=value("NRestarts", 0),
            status_text=value("StatusText", ""),
            main_pid=value("MainPID", 0),
            result=value("Result", ""),
            exec_main_code=value("ExecMainCode", 0),
            exec_main_status=value("ExecMainStatus", 0),
        )

    async def unit_states(self, units: Iterable[str]) -> List[UnitState]:
        """The states of several units, read concurrently, in the given order."""
        return list(await asyncio.gather(*(self.unit_state(unit) for unit in units)))

    # -- plumbing ------------------------------------------------------------

    async def _call(self, member: str, signature: str = "", body: Optional[list] = None, *,
                    unit: Optional[str] = None, destination: str = SERVICE, path: str = MANAGER_PATH,
                    interface: str = MANAGER, timeout: float = CALL_TIMEOUT) -> list:
        from dbus_next import Message, MessageType

        message = Message(destination=destination, path=path, interface=interface, member=member,
                          signature=signature, body=body or [])
        try:
            reply = await asyncio.wait_for(self._bus.call(message), timeout)
        except asyncio.TimeoutError:
            raise BusError(f"systemd did not answer {member} within {timeout:g} s ({self._where})") from None
        except (OSError, EOFError) as exc:
            raise BusError(f"lost the connection to the bus at {self._where}: {exc}") from None
        if reply.message_type == MessageType.ERROR:
            raise _error(member, reply.error_name, reply.body[0] if reply.body else "", unit, self._where)
        return reply.body


def _error(member: str, name: str, text: str, unit: Optional[str], where: str) -> BusError:
    """The BusError for a D-Bus error reply."""
    if name in _NOT_RUNNING or name.startswith("org.freedesktop.DBus.Error.Spawn."):  # activation failed
        return BusError(f"systemd is not running on the bus at {where} ({text})")
    if name in _DENIED:
        return BusError(f"permission denied: systemd refused {member} ({text}); run as root")
    if name.startswith(SERVICE + ".") and unit is not None:
        return UnitError(unit, name, text)
    return BusError(f"systemd: {member} failed: {text} ({name})")


@asynccontextmanager
async def connect(bus_address: Optional[str] = None) -> AsyncIterator[Systemd]:
    """A connection to systemd on the bus at ``bus_address`` (see ``address()``).

    Must run inside the event loop that will use it: dbus-next binds the loop
    that is current when the bus is created.
    """
    from dbus_next import BusType
    from dbus_next.aio import MessageBus
    from dbus_next.errors import AuthError, InvalidAddressError

    where = address(bus_address)
    try:
        bus = await asyncio.wait_for(MessageBus(bus_address=where, bus_type=BusType.SYSTEM).connect(),
                                     CALL_TIMEOUT)
    except InvalidAddressError as exc:
        raise BusError(f"bad bus address {where!r}: {exc}") from None
    except PermissionError:
        raise BusError(f"permission denied connecting to the bus at {where}") from None
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise BusError(f"no D-Bus system bus at {where} ({exc.strerror}); is dbus running?") from None
    except AuthError as exc:
        raise BusError(f"the bus at {where} refused us: {exc}") from None
    except (OSError, EOFError, asyncio.TimeoutError) as exc:
        raise BusError(f"cannot connect to the bus at {where}: {str(exc) or 'no answer'}") from None
    try:
        yield Systemd(bus, where)
    finally:
        bus.disconnect()
        try:
            await bus.wait_for_disconnect()
        except Exception:  # the connection is gone either way
            pass
