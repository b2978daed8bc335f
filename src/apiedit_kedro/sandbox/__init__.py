"""Execution sandbox: runs generated programs per assert unit in an edited or a pristine world.

`execute(requests)` validates the whole batch, then runs each request in a fresh `fork` of a
pooled worker (workers are started once per process through a pinned forkserver and reused), with
resource limits, a reliability guard, the edited world installed when asked, stdout/stderr
swallowed and stdin raising. Each test unit runs in its own try/except under its own SIGALRM
budget and its verdict is streamed to the worker at once, so earlier verdicts survive a kill.
The guard is NOT a security boundary (ctypes undoes it); run untrusted code in a container.

Execution order in the child: the program's top level (load stage) runs in its own namespace;
then `setup` and the units run in a separate namespace for the trusted test code: a snapshot of
the program's globals (so the entry point is visible) whose builtins are the worker's own,
taken before the world patch. So tests keep builtins the edited world removes (e.g. `abs`),
and a program cannot fake a pass by patching or swapping builtins. Test code that uses a
removed module API (e.g. `math.sqrt`) still fails: such tasks must be excluded upstream.

Process model: `workers` (default min(usable cores, 4)) forkserver-started workers, reused across
calls and shut down atexit; each holds up to 2 queued samples. Per sample the worker compiles the
program and runs the static API scan (both world-independent), forks a child into its own
process group and sleeps on a pidfd until the child exits or the wall-clock deadline passes,
then SIGKILLs the group and reaps everything (the worker is a child subreaper). A worker that
dies costs only its running sample ("sandbox_error"); it is replaced. Per-sample directories
live on /dev/shm when it exists (an ext4 mkdir+rmdir cost more than a sample here).

Request keys: `code` (full program), `tests` (list of assert units), `setup` (str, may be ""),
`world` ("edited" | "pristine"), `mappings` (api_mapping records), `timeout_s` (wall clock for the
whole sample); optional `unit_timeout_s` (default timeout_s), `memory_limit_mb` (address space
allowed above the worker's size, default 1024).

Result keys: compiles, syntax_ok, load_ok, asserts_passed, asserts_total, full_pass, error_type,
error_message, new_api_calls, new_api_calls_by_api (JSON), old_api_refs, new_api_refs, timed_out,
tamper_suspect, seconds; plus raw_full_pass (full pass ignoring the static removed-API check), failed_stage
("syntax" | "static" | "load" | "setup" | "tests" | "sandbox" | "") and unit_passed ("1"/"0" per
counted unit).

Semantics:
- `compiles` = syntax_ok and load_ok and (world == "pristine" or the static scan finds no
  reference to a removed API).
- `asserts_total` counts non-constant units only: `assert True`/`assert 1` are neither run nor
  counted. Units without a verdict (killed, early exit) count as failed.
- `full_pass` = compiles, the run completed, every counted unit passed and asserts_total > 0.
  A sample whose tests are all constant (asserts_total == 0) is NOT a pass: error_type "no_tests".
- The program still runs when the static scan flags a removed API; `raw_full_pass` keeps that
  run's verdict while `full_pass` is nested under `compiles`.

error_type vocabulary ("" only for a full pass):
- "syntax_error": compile() of the program failed (nothing ran).
- "removed_api": edited world, the program references a removed API (static scan).
- "guard_violation": the program called a disabled function (fork, kill, remove, socket, open
  for writing outside its temp dir, exit...).
- "timeout": wall-clock deadline (hard kill), RLIMIT_CPU, or a unit's SIGALRM budget.
- "memory_limit": MemoryError under the address-space limit, or killed by the OOM killer.
- "crash": the child died from a signal (segfault, abort).
- "early_exit": the program exited (sys.exit, os._exit) before the tests finished.
- "no_tests": everything ran but there was no non-constant unit to check.
- "sandbox_error": the sandbox failed (worker died, internal error); not the program's fault.
- "static_scan_failed": the removed-API scan hit its 2 s deadline or Python's recursion limit
  (huge or deeply nested programs); nothing ran and the sample does not compile.
- "tamper_suspect": the run passed, but the program's source names a route into the harness
  (frames, gc, tracing, closures, `__globals__`, `__mro__`/`__subclasses__`, ctypes, inspect,
  `apiedit_kedro`); such a sample never counts as a pass (`tamper_suspect` is True).
- otherwise the Python exception class of the first failure, in stage order load -> setup ->
  units (e.g. "AssertionError", "NameError", "ImportError", "TypeError", "RecursionError"). Only
  real built-in classes keep their bare name; a class the program defined is reported as
  "program.<Name>", so a look-alike named "timeout" or "GuardViolation" cannot pose as a verdict.

Programs and tests are compiled with PEP 563 semantics on purpose (annotations are never
evaluated) and nothing is inherited from the harness's own future imports; the static scan does
not count a name that appears only in annotations as a use.
"""

from apiedit_kedro.sandbox.engine import execute
from apiedit_kedro.sandbox.pool import SandboxStartupError, shutdown_pool
from apiedit_kedro.sandbox.requests import SandboxRequestError

__all__ = ["SandboxRequestError", "SandboxStartupError", "execute", "shutdown_pool"]
