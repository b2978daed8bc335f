"""Adversarial programs, on real processes. For each: a non-passing verdict with a meaningful
error_type, no file outside the sample's temp dir changes (the `sentinel` fixture), no process is
left behind, and the next ordinary sample in the same batch still passes."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from sandbox_helpers import (
    ORDINARY_CODE,
    live_descendants_of_workers,
    ordinary_request,
    request,
    run,
)

pytestmark = pytest.mark.timeout(60)

# Each case: id -> (program, accepted error types). `{sentinel}` is replaced by the file's path.
CASES: dict[str, tuple[str, set[str]]] = {
    "infinite_python_loop": ("while True:\n    pass\n", {"timeout"}),
    "long_c_level_loop": ("total = sum(range(10**11))\n", {"timeout"}),
    "sleep": ("import time\ntime.sleep(30)\n", {"timeout"}),
    "memory_bomb_one_block": ("block = bytearray(10**11)\n", {"memory_limit"}),
    "memory_bomb_growing": (
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))\n",
        {"memory_limit"},
    ),
    "fork_bomb_os_fork": ("import os\nwhile True:\n    os.fork()\n", {"guard_violation"}),
    "fork_posix_fork": ("import posix\nposix.fork()\n", {"guard_violation"}),
    "fork_bomb_ctypes": (
        # ctypes goes around the guard: 16 spinning processes, killed as a group at the deadline
        "import ctypes\nlibc = ctypes.CDLL(None)\nfor _ in range(4):\n    libc.fork()\n"
        "while True:\n    pass\n",
        {"tamper_suspect"},
    ),
    "subprocess_rm": (
        "import subprocess\nsubprocess.run(['rm', '-f', '{sentinel}'])\n",
        {"guard_violation"},
    ),
    "os_system": ("import os\nos.system('rm -f {sentinel}')\n", {"guard_violation"}),
    "deep_recursion": (
        "def down(n):\n    return down(n + 1)\ndown(0)\n",
        {"RecursionError"},
    ),
    "deep_recursion_raised_limit": (
        "import sys\nsys.setrecursionlimit(10**7)\ndef down(n):\n    return down(n + 1)\ndown(0)\n",
        {"crash", "RecursionError", "memory_limit", "timeout"},
    ),
    "sys_exit_before_tests": ("import sys\nsys.exit(0)\n", {"early_exit"}),
    "os_exit_before_tests": ("import os\nos._exit(0)\n", {"early_exit"}),
    "builtin_exit": ("exit(0)\n", {"guard_violation"}),
    "segfault_ctypes": ("import ctypes\nctypes.string_at(0)\n", {"tamper_suspect"}),
    "abort": ("import os\nos.abort()\n", {"crash"}),
    "write_outside": ("open('{sentinel}', 'w').write('changed')\n", {"guard_violation"}),
    "append_outside_os_open": (
        "import os\nfd = os.open('{sentinel}', os.O_WRONLY | os.O_APPEND)\nos.write(fd, b'x')\n",
        {"guard_violation"},
    ),
    "pathlib_write_outside": (
        "import pathlib\npathlib.Path('{sentinel}').write_text('changed')\n",
        {"guard_violation"},
    ),
    "delete_outside": ("import os\nos.remove('{sentinel}')\n", {"guard_violation"}),
    "rmtree_outside": (
        "import shutil, os\nshutil.rmtree(os.path.dirname('{sentinel}'))\n",
        {"guard_violation"},
    ),
    "rename_outside": (
        "import os\nos.rename('{sentinel}', '{sentinel}.moved')\n",
        {"guard_violation"},
    ),
    "new_file_outside": ("open('{sentinel}.new', 'x').write('x')\n", {"guard_violation"}),
    "file_io_class_outside": ("import io\nio.FileIO('{sentinel}', 'w')\n", {"guard_violation"}),
    "huge_stdout_forever": ("while True:\n    print('x' * 100000)\n", {"timeout"}),
    "read_stdin": ("value = input()\n", {"guard_violation"}),
    "read_stdin_directly": ("import sys\nvalue = sys.stdin.read()\n", {"guard_violation"}),
    "network": ("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", {"guard_violation"}),
    "kill_other_processes": ("import os\nos.kill(1, 9)\n", {"guard_violation"}),
    # The C modules under os and io, and a fresh copy of one after `del sys.modules[...]`.
    "posix_open_truncate": (
        "import posix\nposix.open('{sentinel}', posix.O_WRONLY | posix.O_TRUNC)\n",
        {"guard_violation"},
    ),
    "io_c_module_open": ("import _io\n_io.open('{sentinel}', 'w')\n", {"guard_violation"}),
    "io_c_module_file_io": ("import _io\n_io.FileIO('{sentinel}', 'w')\n", {"guard_violation"}),
    "posix_mkdir_outside": ("import posix\nposix.mkdir('{sentinel}.d')\n", {"guard_violation"}),
    "utime_outside": ("import os\nos.utime('{sentinel}', (0, 0))\n", {"guard_violation"}),
    "reimported_posix": (
        "import sys\ndel sys.modules['posix']\nimport posix\n"
        "posix.open('{sentinel}', posix.O_WRONLY | posix.O_TRUNC)\n",
        {"guard_violation"},
    ),
    "spawnv_passfds_rm": (
        "import multiprocessing.util, time\n"
        "getattr(multiprocessing.util, 'spawnv_' + 'passfds')"
        "(b'/bin/rm', [b'/bin/rm', b'-f', b'{sentinel}'], [])\ntime.sleep(0.3)\n",
        {"guard_violation"},
    ),
    "escape_process_group": ("import os\nos.setsid()\n", {"guard_violation"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_adversarial_program_fails_contained(case: str, sentinel: Path):
    program, accepted = CASES[case]
    code = program.replace("{sentinel}", str(sentinel)) + ORDINARY_CODE
    # Filling 256 MB can take over a second on a loaded machine; the hangs need only a second.
    timeout_s = 5.0 if case.startswith("memory_bomb") else 1.0
    bad, after = run(
        [request(code, timeout_s=timeout_s, memory_limit_mb=256), ordinary_request()],
        workers=2,
    )
    assert not bad["full_pass"], bad
    assert bad["error_type"] in accepted, bad
    assert bad["error_message"]
    assert after["full_pass"], after
    assert live_descendants_of_workers() == []


def _active_layers() -> set[str]:
    [result] = run([ordinary_request()])
    return set(result["isolation_layers"].split(","))


def test_a_raw_socket_from_the_c_base_class_connects_nowhere():
    if "network" not in _active_layers():
        pytest.skip("this kernel refused a private network namespace (logged at pool start)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        code = (
            "import socket\nraw = getattr(socket.socket, '__m' + 'ro__')[1]()\n"
            f"raw.connect(('127.0.0.1', {port}))\n" + ORDINARY_CODE
        )
        [result] = run([request(code)])
        with pytest.raises(TimeoutError):
            server.accept()
    assert not result["full_pass"] and result["error_type"] == "OSError", result


def test_limits_cannot_be_raised_again():
    code = (
        "import resource\n"
        "for which in (resource.RLIMIT_AS, resource.RLIMIT_CPU):\n"
        "    soft, hard = resource.getrlimit(which)\n"
        "    for wanted in ((hard, hard), (resource.RLIM_INFINITY, resource.RLIM_INFINITY)):\n"
        "        try:\n"
        "            resource.setrlimit(which, wanted)\n"
        "        except (ValueError, OSError):\n"
        "            pass\n"
        "block = bytearray(10**9)\n" + ORDINARY_CODE
    )
    [result] = run([request(code, timeout_s=5.0, memory_limit_mb=256)])
    assert result["error_type"] == "memory_limit", result


def test_a_module_written_on_the_import_path_poisons_no_later_sample():
    probe = "sandbox_poison_probe"
    writer = (
        "import posix, _io, sys\n"
        "for directory in [d for d in sys.path if d]:\n"
        "    for attempt in (\n"
        f"        lambda: posix.open(directory + '/{probe}.py', posix.O_WRONLY | posix.O_CREAT),\n"
        f"        lambda: _io.open(directory + '/{probe}.py', 'w'),\n"
        "    ):\n"
        "        try:\n"
        "            attempt()\n"
        "        except Exception:\n"
        "            pass\n" + ORDINARY_CODE
    )
    reader = (
        f"try:\n    import {probe}\n    poisoned = True\n"
        "except ImportError:\n    poisoned = False\n" + ORDINARY_CODE
    )
    try:
        results = run([request(writer), *[request(reader, ["assert not poisoned"])] * 4])
        assert all(r["full_pass"] for r in results[1:]), results
    finally:
        for directory in [d for d in sys.path if d and os.path.isdir(d)]:
            Path(directory, f"{probe}.py").unlink(missing_ok=True)


def test_a_sample_cannot_take_the_next_samples_directories():
    # The old naming was `<worker pid>-<counter>`: pre-creating the next names broke the
    # samples that came after. Names are random now, and the base dir is not writable anyway.
    squatter = (
        "import os, posix\nparent, name = os.path.split(os.getcwd())\n"
        "prefix, _, counter = name.rpartition('-')\n"
        "if counter.isdigit():\n"
        "    for n in range(int(counter) + 1, int(counter) + 20):\n"
        "        try:\n"
        "            posix.mkdir(os.path.join(parent, f'{prefix}-{n}'))\n"
        "        except OSError:\n"
        "            pass\n" + ORDINARY_CODE
    )
    results = run([request(squatter, timeout_s=5.0), *[ordinary_request()] * 6], workers=2)
    assert all(r["full_pass"] for r in results[1:]), results


def test_huge_output_does_not_break_a_correct_program():
    code = "print('x' * 10**7)\nimport sys\nsys.stderr.write('y' * 10**6)\n" + ORDINARY_CODE
    [result] = run([request(code, timeout_s=2.0)])
    assert result["full_pass"], result


def test_writing_inside_its_own_temp_dir_is_allowed():
    code = (
        "import os, tempfile\nopen('scratch.txt', 'w').write('ok')\nos.remove('scratch.txt')\n"
        "with tempfile.TemporaryFile() as f:\n    f.write(b'ok')\n" + ORDINARY_CODE
    )
    [result] = run([request(code)])
    assert result["full_pass"], result


WRONG = "def add_one(x):\n    return x\n"


@pytest.mark.parametrize(
    "cheat",
    [
        "class AssertionError(Exception):\n    pass\n",
        "import builtins\nbuiltins.AssertionError = KeyError\n",
        "__builtins__ = {'AssertionError': KeyError, '__import__': __import__}\n",
        "import builtins\nbuiltins.abs = lambda value: 0\n",
        "__builtins__ = dict(vars(__import__('builtins')), abs=lambda value: 0)\n",
        "print('U\\t0\\tok\\t\\t')\nprint('U\\t1\\tok\\t\\t')\nprint('D')\n",
        "import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, b'x\\tU\\t0\\tok\\t\\t\\nx\\tD\\n')\n"
        "    except OSError:\n        pass\n",
        "import sys\nsys.stdout.write('D\\n')\nsys.stderr.write('D\\n')\n",
        "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    ],
    ids=[
        "redefine_assertion_error",
        "patch_builtin_assertion_error",
        "swap_builtins_dict",
        "patch_builtin_abs",
        "swap_builtins_abs",
        "print_fake_verdicts",
        "write_fake_verdicts_to_every_fd",
        "fake_done_on_std_streams",
        "exit_zero_at_exit",
    ],
)
def test_cheats_do_not_fake_a_pass(cheat: str):
    tests = ["assert add_one(1) == 2", "assert abs(add_one(0) - 1) < 1e-9"]
    [result] = run([request(cheat + WRONG, tests)])
    assert not result["full_pass"], result
    assert result["asserts_passed"] == 0, result


def test_solution_defining_check_cannot_override_the_tests_check():
    code = "def check(candidate):\n    return True\n" + WRONG
    setup = "def check(candidate):\n    assert candidate(1) == 2\n"
    [result] = run([request(code, ["check(add_one)"], setup=setup)])
    assert not result["full_pass"] and result["error_type"] == "AssertionError"


@pytest.mark.parametrize(
    "completion",
    ["", "    pass\n", '    """Only a docstring."""\n'],
    ids=["empty", "pass_body", "docstring_only"],
)
def test_empty_completions_fail(completion: str):
    prompt = 'def add_one(x):\n    """Return x + 1."""\n'
    [result] = run([request(prompt + completion)])
    assert not result["full_pass"]


def test_closing_every_descriptor_is_an_early_exit_not_a_sandbox_error():
    code = "import os\nos.closerange(3, 4096)\n" + ORDINARY_CODE
    [result] = run([request(code)])
    assert result["error_type"] == "early_exit", result
