import pipeline


def test_when_package_imported_then_public_surface_is_exactly_all() -> None:
    public = {n for n in dir(pipeline) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(pipeline, n)).__name__ == "module"}
    assert public - modules == set(pipeline.__all__)
    assert list(pipeline.STAGES) == ["check_input", "erase", "retention", "ingest", "consent",
                                     "guardrails", "detect_pii", "pseudonymize", "generalize",
                                     "minimize", "reidentify", "validate", "features", "publish",
                                     "monitor",
                                     "report"]
