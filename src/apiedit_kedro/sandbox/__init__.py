"""Execution sandbox: runs generated programs per assert unit in an edited or a pristine world.

`execute(requests)` validates the whole batch, then runs each request in a fresh `fork` of a
pooled worker (workers are started once per process through a pinned forkserver and reused), with
resource limits, a reliability guard, the OS isolation layers the machine allows (`isolation`:
private network and read-only mount namespaces, an unprivileged uid), the edited world installed
when asked, stdout/stderr swallowed and stdin raising. The child compiles the program and scans
it statically (`scan`), then runs each test unit in its own try/except under its own SIGALRM
budget and streams its verdict to the worker at once, so earlier verdicts survive a kill. Only
the OS layers are a boundary; the guard alone is not (ctypes undoes it).

Execution order in the child: the program's top level (load stage) runs in its own namespace;
then `setup` and the units run in a separate namespace for the trusted test code: a snapshot of
the program's globals (so the entry point is visible) whose builtins are the worker's own,
taken before the world patch. So tests keep builtins the edited world removes (e.g. `abs`),
and a program cannot fake a pass by patching or swapping builtins. Test code that uses a
removed module API (e.g. `math.sqrt`) still fails: such tasks must be excluded upstream.

Process model: `workers` (default min(usable cores, 4)) forkserver-started workers, reused across
calls and shut down atexit; each holds up to 2 queued samples. Per sample the worker forks a
child into its own process group and sleeps on a pidfd until the child exits or the wall-clock
deadline passes, then SIGKILLs the group and reaps everything (the worker is a child
subreaper). Every task and reply carries a per-call batch id and the sample's index; an
interrupted `execute` (Ctrl-C) kills the pool, so the next call never reads old replies. A
worker that dies after its ready message costs only its running sample ("sandbox_error"); it
is replaced and the pool carries on. Per-sample directories (random names) live on /dev/shm
when it exists (an ext4 mkdir+rmdir cost more than a sample here).

Request keys: `code` (full program), `tests` (list of assert units), `setup` (str, may be ""),
`world` ("edited" | "pristine"), `mappings` (api_mapping records), `timeout_s` (wall clock for the
whole sample, at most 600 s); optional `unit_timeout_s` (default timeout_s), `memory_limit_mb`
(address space allowed above the worker's size, default 1024), `prompt_chars` (length of the
benchmark-written prefix of `code`, e.g. the HumanEval prompt: API references there are not
scored; default 0).

Result keys: the fields of `protocol.SampleResult` (`RESULT_FIELDS`): compiles, syntax_ok,
load_ok, asserts_passed, asserts_total, full_pass, raw_full_pass (full pass ignoring the static
checks), error_type, error_message, failed_stage ("syntax" | "static" | "load" | "setup" |
"tests" | "sandbox" | ""), unit_passed ("1"/"0" per counted unit), new_api_calls,
new_api_calls_by_api (JSON), old_api_refs, new_api_refs (scored on the completion only,
annotations excluded), timed_out, seconds, tamper_suspect (the program introspects or forges
the harness: never a pass), isolation_layers (comma-separated active layers).

Semantics:
- `compiles` = syntax_ok and load_ok and (world == "pristine" or the static scan finds no
  reference to a removed API).
- `asserts_total` counts non-constant units only: `assert True`/`assert 1` are neither run nor
  counted. Units without a verdict (killed, early exit) count as failed.
- `full_pass` = compiles, the run completed, every counted unit passed, asserts_total > 0 and
  not tamper_suspect.
  A sample whose tests are all constant (asserts_total == 0) is NOT a pass: error_type "no_tests".
- The program still runs when the static scan flags a removed API; `raw_full_pass` keeps that
  run's verdict while `full_pass` is nested under `compiles`.

error_type vocabulary ("" only for a full pass):
- "syntax_error": compile() of the program failed (nothing ran).
- "static_scan_failed": the static scan could not finish (nothing ran).
- "tamper_suspect": the static scan found frame/gc/trace/ctypes/import-machinery introspection,
  or the child's records broke the protocol (duplicates, unknown units, out of order).
- "removed_api": edited world, the program references a removed API (static scan).
- "guard_violation": the program called a disabled function (fork, kill, remove, socket, open
  for writing outside its temp dir, exit...).
- "timeout": wall-clock deadline (hard kill, also while compiling or scanning), RLIMIT_CPU, or a
  unit's SIGALRM budget.
- "memory_limit": MemoryError under the address-space limit, or killed by the OOM killer.
- "crash": the child died from a signal (segfault, abort).
- "early_exit": the program exited (sys.exit, os._exit) before the tests finished.
- "no_tests": everything ran but there was no non-constant unit to check.
- "sandbox_error": the sandbox failed (worker died, internal error); not the program's fault,
  transient: never cache it as a final result.
- otherwise the Python exception class of the first failure, in stage order load -> setup ->
  units: a built-in class by its bare name ("AssertionError", "NameError", "ImportError",
  "TypeError", "RecursionError"), any other as "module.QualName" (a program's own class named
  `AssertionError` or `timeout` is "__main__.AssertionError", never a vocabulary word).
"""

from apiedit_kedro.sandbox.engine import execute
from apiedit_kedro.sandbox.pool import SandboxStartupError, shutdown_pool
from apiedit_kedro.sandbox.protocol import RESULT_FIELDS, TRANSIENT_ERROR_TYPES, SampleResult
from apiedit_kedro.sandbox.requests import SandboxRequestError

__all__ = [
    "RESULT_FIELDS",
    "TRANSIENT_ERROR_TYPES",
    "SampleResult",
    "SandboxRequestError",
    "SandboxStartupError",
    "execute",
    "shutdown_pool",
]
