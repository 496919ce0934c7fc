"""The values of the settings that shape and judge the stages, read off the resources."""

from prox_dagster import fingerprint


def settings_values(*, refiner=None, policy=None, tokenizer=None, checks=None,
                    resolve: bool = True) -> dict:
    """The values of the settings ``prox_dagster.fingerprint.SHAPED_BY`` names and of the
    ``THRESHOLDS`` these resources hold: what the stages' code versions and checks are computed
    from, at load time and in every run alike. ``resolve=False`` (loading the code location)
    asks no hub and loads no model or tokenizer: what is not known locally reads as
    unresolved."""
    values: dict = {}
    if refiner is not None:
        values.update(refiner=refiner.describe(resolve),
                      chunk_tokenizer=refiner.chunk_tokenizer_identity(resolve),
                      max_chunk_tokens=refiner.max_chunk_tokens)
    if policy is not None:
        values["policy"] = policy.settings().model_dump()
    if tokenizer is not None:
        values.update(tokenizer=tokenizer.identity(resolve), token_files=tokenizer.token_files())
    if checks is not None:
        values.update(checks.settings().model_dump())
    return values


def stage_settings_of(stage: str, **resources) -> fingerprint.StageSettings:
    """``stage``'s settings from the resources that hold them (``refiner``, ``policy``,
    ``tokenizer``, ``checks``), as a step sees them."""
    return fingerprint.settings_of(stage, settings_values(**resources))
