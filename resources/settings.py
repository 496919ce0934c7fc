"""Resources whose fields are an engine dataclass's: each setting, its default and its validation
exist once, in the engine."""

import dataclasses
import json
import typing

import dagster as dg
import pydantic


def settings_resource(target: type, name: str, doc: str) -> type[dg.ConfigurableResource]:
    """A ``ConfigurableResource`` named ``name`` with one field per field of the dataclass
    ``target``; ``settings()`` builds (and so validates) the dataclass."""

    def settings(self):
        return target(**{f.name: getattr(self, f.name) for f in dataclasses.fields(target)})

    types = typing.get_type_hints(target)  # the engine modules use string annotations
    base = type(f"{name}Base", (dg.ConfigurableResource,), {"settings": settings,
                                                            "__doc__": doc})
    return pydantic.create_model(
        name, __base__=base, __module__="resources",
        **{f.name: (types[f.name], f.default) for f in dataclasses.fields(target)})


def settings_values(*, refiner=None, policy=None, tokenizer=None, checks=None) -> dict:
    """The settings of ``prox_dagster.fingerprint.SETTINGS`` these resources hold: what the
    stages' code versions are computed from, at load time and in every run alike."""
    values: dict = {}
    if refiner is not None:
        values.update(refiner=refiner.version,
                      chunk_tokenizer=refiner.chunk_tokenizer_fingerprint(),
                      max_chunk_tokens=refiner.max_chunk_tokens)
    if policy is not None:
        values["policy"] = policy.settings().version
    if tokenizer is not None:
        values.update(tokenizer=tokenizer.fingerprint(),
                      token_files=json.dumps(tokenizer.file_settings(), sort_keys=True))
    if checks is not None:
        values.update(dataclasses.asdict(checks.settings()))
    return values
