"""The trainer registry: one trainer per ``model:``, unknown models named with a suggestion,
and a new trainer plugs in with ``@register_trainer`` (no if-chain to edit)."""
import pytest

from astrogen.errors import ConfigError, UnknownTypeError
from astrogen.training import load_training_config, run_training
from astrogen.training.registry import (TRAINERS, Trainer, get_trainer, register_trainer,
                                        trainer_names)
from astrogen.training.schema import REQUIRED, check_int, check_sections, loop_keys, top_level


def test_every_model_has_its_trainer():
    assert trainer_names() == sorted(["flowvae", "ddpm", "nbody_gan", "halo_unet", "unet", "d3m",
                                      "prob_unet", "baryon_painter", "ddpm_distill",
                                      "halo_vnet", "scene_deblender"])
    assert get_trainer("unet") is not get_trainer("prob_unet")
    assert type(get_trainer("unet")) is type(get_trainer("prob_unet"))


def test_unknown_model_is_named_with_a_suggestion():
    with pytest.raises(UnknownTypeError, match="Did you mean 'flowvae'") as err:
        load_training_config("model: flowvea\nseed: 0\n")
    assert err.value.key == "model" and err.value.line == 1
    with pytest.raises(ConfigError, match="is required") as err:
        load_training_config("seed: 0\noutput: x.keras\n")
    assert err.value.key == "model"


def test_a_new_trainer_plugs_in(tmp_path):
    class _Data:  # a data set configuration class with one field
        @classmethod
        def field_names(cls):
            return ["n"]

        @classmethod
        def from_dict(cls, d):
            obj = cls()
            obj.n = d.get("n", 1)
            return obj

        def to_dict(self):
            return {"n": self.n}

    schema = {"": top_level("toy", sections=("toy",)), "toy": {"width": (2, check_int(1))},
              "training": {"steps": (REQUIRED, check_int(0)), **loop_keys(5)}}

    @register_trainer("toy")
    class ToyTrainer(Trainer):
        def check(self, cfg):
            return check_sections(cfg, schema, ("toy",), _Data, "toy data set")

        def train(self, cfg, resume=False):
            return {"width": cfg["toy"]["width"], "steps": cfg["training"]["steps"]}

    try:
        text = f"model: toy\noutput: {tmp_path}/m.keras\ndataset: {{path: d}}\n" \
               "training: {steps: 3}\n"
        assert run_training(text) == {"width": 2, "steps": 3}
        cfg = load_training_config(text)
        assert cfg["training"]["checkpoint_every"] == 5 and cfg["dataset"] == {
            "path": "d", "n": 1}
        with pytest.raises(ConfigError, match=r"toy\.width.*>= 1"):
            load_training_config(text + "toy: {width: 0}\n")
        with pytest.raises(ConfigError, match="ending in '.keras'"):
            load_training_config(text.replace("m.keras", "m.h5"))
    finally:
        TRAINERS._items.pop("toy", None)
