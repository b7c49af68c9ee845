"""`tarn sql` as a person uses it, in a real terminal (tmux): a long query
shows a progress bar with the rows and bytes read; Ctrl-C cancels it on the
server (its run ends ABORT, cancelled by its client) and the shell stays
usable; CSV output never shows the bar."""

import os
import shlex
import subprocess
import time

import tarn
from conftest import RunningServer, tarn_binary
from test_queries import ENDLESS, wait_for

# An aggregate over all of lineitem that takes a few seconds and then answers.
SLOW = "SELECT count(*) AS n FROM lineitem a CROSS JOIN (SELECT l_quantity FROM lineitem LIMIT 300) b WHERE a.l_quantity > b.l_quantity"


class Terminal:
    """A tmux session of its own (its own server socket), 200x50."""

    def __init__(self, command):
        self.socket = f"tarn-test-{os.getpid()}-{time.monotonic_ns()}"
        self.tmux("new-session", "-d", "-s", "t", "-x", "200", "-y", "50", command)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "t")

    def type(self, text):
        # tmux reads an argument's final ';' as a command separator.
        if text.endswith(";"):
            text = text[:-1] + "\\;"
        self.tmux("send-keys", "-t", "t", "-l", text)
        self.tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, text, timeout=60):
        found = wait_for(lambda: text in self.screen(), timeout=timeout, step=0.1)
        assert found, f"'{text}' never appeared on the screen:\n{self.screen()}"

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def test_a_long_query_shows_progress_and_ctrl_c_cancels_it_on_the_server(lake):
    server = RunningServer(lake)
    terminal = Terminal(f"{shlex.quote(str(tarn_binary()))} sql --host {server.uri}")
    try:
        terminal.wait_for("tarn>")
        terminal.type(f"{ENDLESS};")
        terminal.wait_for("Ctrl-C cancels")
        bar = terminal.screen()
        assert "rows," in bar and "scanned" in bar and "%" in bar, bar
        with tarn.connect(server.uri) as conn:
            running = lambda: conn.arrow(
                "SELECT state FROM system.queries WHERE sql LIKE 'SELECT a.l_returnflag%'"
            ).column("state").to_pylist()
            assert running() == ["running"], running()
            terminal.keys("C-c")
            terminal.wait_for("cancelled (Ctrl-C)")
            assert wait_for(lambda: running() == [], timeout=2), running()
            runs = conn.arrow("SELECT state, error FROM system.runs WHERE sql LIKE 'SELECT a.l_returnflag%'").to_pylist()
            assert len(runs) == 1 and runs[0]["state"] == "ABORT", runs
            assert "cancelled by its client" in runs[0]["error"], runs
        # The shell goes on.
        terminal.type("SELECT 41 + 1 AS answer;")
        terminal.wait_for("1 row in")
        assert "42" in terminal.screen()
        terminal.type("\\q")
        assert wait_for(lambda: subprocess.run(["tmux", "-L", terminal.socket, "has-session", "-t", "t"], capture_output=True).returncode != 0, timeout=10)
    finally:
        terminal.close()
        server.stop()


def test_csv_output_in_a_terminal_never_shows_the_bar(lake, tmp_path):
    server = RunningServer(lake)
    done = tmp_path / "done"
    command = f"{shlex.quote(str(tarn_binary()))} sql --host {server.uri} -f csv -c {shlex.quote(SLOW)}; touch {done}; sleep 30"
    terminal = Terminal(command)
    try:
        assert wait_for(done.exists, timeout=120, step=0.2), terminal.screen()
        screen = terminal.screen()
        assert "Ctrl-C cancels" not in screen and "scanned" not in screen, screen
        assert screen.splitlines()[0] == "n", screen
        with tarn.connect(server.uri) as conn:
            expected = conn.arrow(SLOW).column("n")[0].as_py()
        assert str(expected) in screen, screen
    finally:
        terminal.close()
        server.stop()
