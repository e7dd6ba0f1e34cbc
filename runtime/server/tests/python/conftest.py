"""Session hooks for the `a3s-power serve` tests."""
from harness import Server


def pytest_sessionfinish(session, exitstatus):
    """No server outlives the run, whatever a failing test skipped."""
    for s in Server.started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
