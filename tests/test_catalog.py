"""The model catalog: the split `base` weights are joined once and checked, client model names
resolve through aliases (never to a path), and operator models that cannot load say why."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest

from server.engine.catalog import (
    Catalog,
    ModelNotServed,
    ModelUnavailable,
    Resolution,
    model_dir_problems,
)
from server.settings import Settings

SERVED = {"tiny.en", "base"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load(Settings().models_dir)


def test_base_is_joined_once_verified_and_never_rewritten(catalog, tmp_path):
    if not catalog.installed("base"):
        pytest.skip("the base extra is not installed")
    store = Catalog(catalog.entries, catalog.aliases, catalog.default, tmp_path)
    first = store.materialize("base")
    target = tmp_path / "store" / "base" / "model.bin"
    assert first == str(target.parent)
    assert target.stat().st_size == catalog.entries["base"]["size"]
    assert (target.parent / ".verified").read_text().strip() == catalog.entries["base"]["sha256"]
    for name in catalog.entries["base"]["files"]["names"]:
        assert (target.parent / name).is_file()
    before = target.stat()
    assert store.materialize("base") == first
    after = target.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    assert not list(target.parent.glob("*.part"))


def test_join_with_wrong_checksum_is_refused_and_cleaned_up(catalog, tmp_path):
    if not catalog.installed("base"):
        pytest.skip("the base extra is not installed")
    entries = copy.deepcopy(catalog.entries)
    entries["base"]["sha256"] = "0" * 64
    store = Catalog(entries, catalog.aliases, catalog.default, tmp_path)
    with pytest.raises(ModelUnavailable, match="do not match the catalog"):
        store.materialize("base")
    directory = tmp_path / "store" / "base"
    assert not (directory / "model.bin").exists()
    assert not list(directory.glob("*.part"))


@pytest.mark.parametrize(
    "requested,expected",
    [
        ("nova-3", "tiny.en"),
        ("nova-2", "tiny.en"),
        ("nova-2-general", "tiny.en"),
        ("Nova-3", "tiny.en"),
        ("enhanced", "tiny.en"),
        ("general", "tiny.en"),
        ("", "tiny.en"),
        (None, "tiny.en"),
        ("base", "base"),
        ("whisper-base", "base"),
        ("tiny.en", "tiny.en"),
    ],
)
def test_deepgram_names_resolve_without_warning(catalog, requested, expected):
    resolution = catalog.resolve(requested, SERVED, "tiny.en")
    assert (resolution.name, resolution.warning) == (expected, None)


@pytest.mark.parametrize(
    "requested", ["/etc", "../../x", "/etc/passwd", "~/.ssh", "some/repo", "C:\\x", "nova-99"]
)
def test_unknown_names_and_paths_fall_back_to_the_default(catalog, requested):
    resolution = catalog.resolve(requested, SERVED, "tiny.en")
    assert resolution.name == "tiny.en"
    assert resolution.warning and requested in resolution.warning


@pytest.mark.parametrize("requested", ["whisper-large", "whisper-medium", "whisper-small"])
def test_a_whisper_size_not_served_is_refused_not_substituted(catalog, requested):
    with pytest.raises(ModelNotServed, match=requested):
        catalog.resolve(requested, SERVED, "tiny.en")


def test_a_whisper_size_is_answered_by_a_served_model_of_that_size(catalog):
    served = {*SERVED, "Systran/faster-whisper-small"}
    resolution = catalog.resolve("whisper-small", served, "tiny.en")
    assert resolution == Resolution("Systran/faster-whisper-small")


def test_alias_to_a_model_not_installed_warns(catalog):
    entries = copy.deepcopy(catalog.entries)
    for part in entries["base"]["parts"]:
        part["package"] = "no_such_package_for_openlisten"
    store = Catalog(entries, catalog.aliases, catalog.default, catalog.store_dir)
    resolution = store.resolve("whisper-base", {"tiny.en"}, "tiny.en")
    assert resolution.name == "tiny.en" and "not available" in resolution.warning


def test_operator_paths_and_repos_fail_with_a_clear_message(catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = Catalog(catalog.entries, catalog.aliases, catalog.default, tmp_path)
    with pytest.raises(ModelUnavailable, match="no such directory"):
        store.materialize(store.add_operator_model(str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"missing model\.bin, config\.json"):
        store.materialize(store.add_operator_model(str(tmp_path / "empty")))
    with pytest.raises(ModelUnavailable, match="Hugging Face Hub"):
        store.materialize(store.add_operator_model("some-org/no-such-whisper-repo"))


def test_operator_directory_is_served_as_is(catalog, tmp_path):
    tiny = catalog.materialize("tiny.en")
    store = Catalog(catalog.entries, catalog.aliases, catalog.default, tmp_path)
    name = store.add_operator_model(tiny)
    assert store.materialize(name) == os.path.realpath(tiny)


def _copy_model(source: str, target: Path, skip: tuple[str, ...] = ()) -> Path:
    """A real operator directory: the files themselves at another path, never a link."""
    target.mkdir()
    for item in Path(source).iterdir():
        if item.name not in skip:
            shutil.copyfile(item, target / item.name)
    return target


@pytest.mark.parametrize(
    "skip,message",
    [
        (("tokenizer.json",), r"missing tokenizer\.json\)"),
        (("vocabulary.txt",), r"missing vocabulary\.json or vocabulary\.txt"),
        (("config.json", "model.bin"), r"missing model\.bin, config\.json"),
    ],
)
def test_a_directory_that_is_not_a_whisper_model_says_what_is_missing(
    catalog, tmp_path, skip, message
):
    bad = _copy_model(catalog.materialize("tiny.en"), tmp_path / "bad", skip)
    store = Catalog(catalog.entries, dict(catalog.aliases), catalog.default, tmp_path)
    with pytest.raises(ModelUnavailable, match=message):
        store.add_operator_model(f"mine={bad}")


def test_weights_of_another_kind_of_model_are_refused(catalog, tmp_path):
    bad = _copy_model(catalog.materialize("tiny.en"), tmp_path / "bad", ("model.bin",))
    (bad / "model.bin").write_bytes(b"\x06\x00\x00\x00\x10\x00TransformerSpec\x00" + bytes(64))
    assert model_dir_problems(bad) == ["model.bin is not CTranslate2 Whisper weights "
                                       "(spec 'TransformerSpec')"]  # fmt: skip
    (bad / "model.bin").write_bytes(b"PK\x03\x04 not a model")
    assert model_dir_problems(bad) == ["model.bin is not a CTranslate2 model file"]


def test_operator_directory_is_served_by_its_name_and_aliases(catalog, tmp_path):
    mine = _copy_model(catalog.materialize("tiny.en"), tmp_path / "mine")
    settings = Settings(
        model_dirs={"house-en": str(mine)},
        aliases={"nova-3": "house-en", "Flux-General-EN": "house-en"},
    )
    store = Catalog.for_settings(settings)
    served = {"tiny.en"}
    assert store.materialize("house-en") == str(mine.resolve())
    assert store.resolve("house-en", served, "tiny.en") == Resolution("house-en")
    assert store.resolve("nova-3", served, "tiny.en") == Resolution("house-en")
    assert store.resolve("flux-general-en", served, "tiny.en") == Resolution("house-en")
    assert store.resolve("nova-2", served, "tiny.en") == Resolution("tiny.en")
    assert store.info("house-en").multilingual is False
    assert store.languages("house-en") == ["en"] and store.source("house-en") == "directory"


def test_default_aliases_map_flux_names(catalog):
    assert catalog.resolve("flux-general-en", SERVED, "tiny.en") == Resolution("tiny.en")
    assert catalog.resolve("flux-general-multi", SERVED, "tiny.en") == Resolution("base")


def test_an_operator_alias_wins_over_the_whisper_size_rule(catalog, tmp_path):
    mine = _copy_model(catalog.materialize("tiny.en"), tmp_path / "mine")
    store = Catalog.for_settings(
        Settings(model_dirs={"small-ish": str(mine)}, aliases={"whisper-small": "small-ish"})
    )
    assert store.resolve("whisper-small", SERVED, "tiny.en") == Resolution("small-ish")


def test_an_alias_to_nothing_is_refused_at_start():
    with pytest.raises(ModelUnavailable, match="alias 'nova-3' maps to 'tiny-en'"):
        Catalog.for_settings(Settings(aliases={"nova-3": "tiny-en"}))


def test_a_name_taken_by_the_catalog_cannot_be_reused(catalog, tmp_path):
    mine = _copy_model(catalog.materialize("tiny.en"), tmp_path / "mine")
    store = Catalog(catalog.entries, dict(catalog.aliases), catalog.default, tmp_path)
    with pytest.raises(ModelUnavailable, match="is a catalog model"):
        store.add_operator_model(f"base={mine}")


def test_mappings_come_from_the_environment_as_pairs(monkeypatch):
    monkeypatch.setenv("OPENLISTEN_ALIASES", "nova-3=base, flux-general-multi=base")
    monkeypatch.setenv("OPENLISTEN_MODEL_DIRS", '{"turbo": "/srv/turbo"}')
    settings = Settings()
    assert settings.aliases == {"nova-3": "base", "flux-general-multi": "base"}
    assert settings.model_dirs == {"turbo": Path("/srv/turbo")}
    monkeypatch.setenv("OPENLISTEN_ALIASES", "nova-3")
    with pytest.raises(ValueError, match="name=value"):
        Settings()


def test_mappings_come_from_the_config_file_as_tables(tmp_path, catalog):
    mine = _copy_model(catalog.materialize("tiny.en"), tmp_path / "mine")
    config = tmp_path / "openlisten.toml"
    config.write_text(
        f'[model_dirs]\nhouse = "{mine}"\n\n[aliases]\n"nova-3" = "house"\n"enhanced" = "base"\n'
    )
    store = Catalog.for_settings(Settings(config=config))
    assert store.resolve("nova-3", SERVED, "tiny.en") == Resolution("house")
    assert store.resolve("enhanced", SERVED, "tiny.en") == Resolution("base")
