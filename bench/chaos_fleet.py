"""The chaos soak's services and what is done to them (bench/chaos.py): each scorer instance and
sink worker is a slot that holds its current process (services/evaluation/processes.py), is
SIGKILLed and started again or SIGSTOPped and SIGCONTed by `Fleet.fault`, and is restarted
when it exits by itself (recorded: a supervisor such as Kubernetes would restart it too, but
the soak reports it). Peak RSS is read from /proc per incarnation, before each kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from services.evaluation.processes import ServiceProcess, metric, scrape

EARLY_METRIC = "label_sink_early_labels_joined_total"


def peak_rss_mib(pid: int | None) -> float:
    """A process's peak resident set (VmHWM) in MiB; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Slot:
    """One service instance across its incarnations."""

    name: str
    make: Callable[[], ServiceProcess]
    proc: ServiceProcess | None = None
    state: str = "down"  # up | stopped (SIGSTOP) | down (killed, restart due)
    due: float = 0.0  # when a stopped slot is continued / a down one restarted
    incarnations: int = 0
    peak_mib: float = 0.0
    early_done: float = 0.0  # early-joined labels of finished incarnations
    early_now: float = 0.0  # ... of the current one, last scraped

    def start(self) -> None:
        self.proc = self.make().start()
        self.state, self.incarnations = "up", self.incarnations + 1
        self.early_done += self.early_now
        self.early_now = 0.0

    def sample(self) -> None:
        if self.proc is not None and self.proc.proc is not None:
            self.peak_mib = max(self.peak_mib, peak_rss_mib(self.proc.proc.pid))

    def pid(self) -> int:
        assert self.proc is not None and self.proc.proc is not None
        return self.proc.proc.pid


@dataclass
class Fleet:
    """The slots, the faults done to them and their unexpected exits."""

    slots: list[Slot]
    say: Callable[[str], None]
    t0: float = field(default_factory=time.monotonic)
    faults: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)

    def start(self) -> None:
        for slot in self.slots:
            slot.start()

    def wait_ready(self, timeout_s: float) -> None:
        for slot in self.slots:
            assert slot.proc is not None
            slot.proc.wait_ready(timeout_s)

    def _note(self, text: str, into: list[str]) -> None:
        line = f"t+{time.monotonic() - self.t0:6.1f}s {text}"
        into.append(line)
        self.say(line)

    def fault(self, rng: np.random.Generator) -> None:
        """SIGKILL (restart 0.5-5 s later) or SIGSTOP (SIGCONT 1-20 s later, so often past the
        6-s session: the group moves its partitions) one running slot, chosen at random."""
        up = [s for s in self.slots if s.state == "up"]
        if not up:
            return
        slot = up[int(rng.integers(len(up)))]
        slot.sample()
        if rng.random() < 0.5:
            assert slot.proc is not None
            slot.proc.kill()
            slot.state, slot.due = "down", time.monotonic() + float(rng.uniform(0.5, 5.0))
            self._note(f"SIGKILL {slot.name}", self.faults)
        else:
            os.kill(slot.pid(), signal.SIGSTOP)
            pause = float(rng.uniform(1.0, 20.0))
            slot.state, slot.due = "stopped", time.monotonic() + pause
            self._note(f"SIGSTOP {slot.name} for {pause:.1f}s", self.faults)

    def tick(self, *, now: bool = False) -> None:
        """Continue / restart the slots that are due (all of them when `now`); restart any that
        exited by itself, recording its exit code and log tail."""
        t = time.monotonic()
        for slot in self.slots:
            if slot.state == "stopped" and (now or t >= slot.due):
                os.kill(slot.pid(), signal.SIGCONT)
                slot.state = "up"
            elif slot.state == "down" and (now or t >= slot.due):
                slot.start()
            elif slot.state == "up" and slot.proc is not None and not slot.proc.alive():
                code = slot.proc.proc.returncode if slot.proc.proc is not None else None
                tail = " | ".join(slot.proc.tail(4).splitlines())[-600:]
                self._note(f"{slot.name} EXITED by itself (code {code}); restarted. "
                           f"Log tail: {tail}", self.exits)
                slot.start()

    def sample(self) -> None:
        """Peak RSS of every live process; the sinks' early-joined counters (running ones: a
        stopped process would not answer)."""
        for slot in self.slots:
            slot.sample()
            if slot.state == "up" and slot.proc is not None and "sink" in slot.name:
                try:
                    slot.early_now = metric(scrape(slot.proc.port), EARLY_METRIC)
                except OSError:
                    pass  # not serving yet (starting, recovering)

    def states(self) -> str:
        return " ".join(f"{s.name}:{s.state}" for s in self.slots)

    def stop(self, timeout_s: float = 60.0) -> dict[str, int | None]:
        """SIGTERM every process at once, then wait for each; their exit codes."""
        self.tick(now=True)
        self.sample()
        procs = {s.name: s.proc.proc for s in self.slots if s.proc is not None}
        for proc in procs.values():
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in procs.items():
            # One SIGTERM only: a second one that lands while the interpreter is finalizing
            # (its handlers reset) ends a process that was stopping cleanly with -15.
            try:
                codes[name] = proc.wait(timeout_s) if proc is not None else None
            except subprocess.TimeoutExpired:
                proc.kill()  # type: ignore[union-attr]
                codes[name] = proc.wait()  # type: ignore[union-attr]
        return codes

    def kill_all(self) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.alive():
                if slot.state == "stopped":
                    os.kill(slot.pid(), signal.SIGCONT)
                slot.proc.kill()

    def early_joined(self) -> int:
        return int(sum(s.early_done + s.early_now for s in self.slots))
