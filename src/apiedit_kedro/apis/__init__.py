"""The API catalogue and the edited-world runtime.

- `mapping`: validated `api_mapping` records (`ApiMapping`, `parse_mappings`, `MappingError`) and
  the usage adapters that build each new API from the old one (`build_new_callable`).
- `world`: installs the edited world in the current process (`install_edited_world`,
  `prepare_world`, `new_api_call_counts`); the pristine world is a process that never did.
- `references`: static, scope-aware resolution of qualified API references in source code
  (`resolve_references`, `find_api_references`); never runs the code.

This package never imports Kedro.
"""
