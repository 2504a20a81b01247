"""MineCLIP's video side (vision tower, temporal pooling, reward head) against the fixtures."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from steve1_env.errors import ConfigurationError, WeightsError
from steve1_env.prompt.mineclip import TextTower, TextTowerConfig
from steve1_env.prompt.mineclip_video import (
    FRAME_SIZE,
    MineCLIPVideo,
    VideoTowerConfig,
    checkpoint_copies,
    checkpoint_layout,
    load_mineclip_video,
    model_state_from_checkpoint,
    resize_frames,
)
from steve1_env.prompt.steve1_encoder import text_tower_state
from steve1_env.prompt.tokenizer import ClipTokenizer
from steve1_env.weights import MINECLIP_PARAMETERS, MINECLIP_STORED_VALUES, load_state_dict

TOL = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def tiny_model(golden, tiny_configs):
    video, text = tiny_configs
    return load_mineclip_video(golden / "mineclip_video_tiny.pth", config=video, text_config=text)


@pytest.fixture(scope="module")
def io(golden):
    return dict(np.load(golden / "mineclip_video_io.npz"))


def test_every_stage_reproduces_the_golden_model(tiny_model, io):
    videos = io["videos"]
    frames = tiny_model.encode_frames(videos.reshape(-1, *videos.shape[2:]))
    np.testing.assert_allclose(frames.view(3, 16, -1).numpy(), io["image_features"], **TOL)
    video = tiny_model.encode_video(videos)
    np.testing.assert_allclose(video.numpy(), io["video_features"], **TOL)
    adapted = tiny_model.adapt_video(video)
    np.testing.assert_allclose(adapted.numpy(), io["adapted_video_features"], **TOL)
    text = tiny_model.encode_text(torch.from_numpy(io["tokens"]))
    np.testing.assert_allclose(text.numpy(), io["text_features"], **TOL)
    logits = tiny_model.logits_per_video(video, text)
    assert logits.shape == (3, 3)
    np.testing.assert_allclose(logits.numpy(), io["logits_per_video"], **TOL)
    assert frames.dtype == video.dtype == logits.dtype == torch.float32


def test_the_text_tower_alone_reproduces_the_text_features(golden, tiny_configs, io):
    # The text tower of steve1_env.prompt.mineclip reads the same checkpoint's text keys.
    tower = TextTower(tiny_configs[1]).eval()
    state = text_tower_state(load_state_dict(golden / "mineclip_video_tiny.pth"))
    tower.load_state_dict(state, strict=True)
    with torch.inference_mode():
        text = tower(torch.from_numpy(io["tokens"]))
    np.testing.assert_allclose(text.numpy(), io["text_features"], **TOL)


def test_pooling_encoded_frames_is_encode_video(tiny_model, io):
    clip = io["videos"][2]
    single = tiny_model.encode_video(clip)
    assert single.shape == (1, 64)
    features = tiny_model.encode_frames(clip)
    torch.testing.assert_close(tiny_model.pool(features), single)
    torch.testing.assert_close(tiny_model.pool(features[None]), single)
    # A shorter window pools too (the start of an episode), and differs.
    assert tiny_model.pool(features[:5]).shape == (1, 64)
    assert not torch.allclose(tiny_model.pool(features[:5]), single)
    # Time order matters: the reversed clip is another video.
    assert not torch.allclose(tiny_model.pool(features.flip(0)), single)


def test_frames_are_resized_exactly_as_upstream(golden, tiny_model):
    example = np.load(golden / "mineclip_resize_example.npz")
    np.testing.assert_array_equal(resize_frames(example["pov"]), example["frame"])
    np.testing.assert_array_equal(resize_frames(example["pov"][None])[0], example["frame"])
    # Frames of any size are resized before encoding.
    torch.testing.assert_close(
        tiny_model.encode_frames(example["pov"][None]),
        tiny_model.encode_frames(example["frame"][None]),
    )
    assert resize_frames(np.zeros((2, 7, 9, 3), np.uint8)).shape == (2, *FRAME_SIZE, 3)


def test_the_released_layout_is_exactly_attn_pths_788_keys(golden):
    manifest = json.loads((golden / "manifests.json").read_text())["mineclip_attn"]["keys"]
    assert len(manifest) == 788
    model = MineCLIPVideo(VideoTowerConfig(), TextTowerConfig(), device="meta")
    layout = checkpoint_layout(model)
    shapes = model.state_dict()
    assert {key: list(shapes[name].shape) for key, name in layout.items()} == manifest
    # A checkpoint with exactly those keys (shapes only: meta tensors) loads strictly.
    checkpoint = {key: torch.empty(shape, device="meta") for key, shape in manifest.items()}
    state = model_state_from_checkpoint(checkpoint, model)
    assert set(state) == set(shapes)
    result = model.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys
    # The distinct parameters are the ones the size bounds of attn.pth count.
    assert sum(value.numel() for value in shapes.values()) == MINECLIP_PARAMETERS
    assert sum(math.prod(shape) for shape in manifest.values()) == MINECLIP_STORED_VALUES
    assert model.image_encoder.pos_embed.shape == (161, 768)
    assert model.image_encoder.projection.shape == (768, 512)


def test_the_tiny_checkpoint_keys_are_all_accounted_for(golden, tiny_configs):
    checkpoint = load_state_dict(golden / "mineclip_video_tiny.pth")
    model = MineCLIPVideo(*tiny_configs, device="meta")
    assert set(checkpoint_layout(model)) == set(checkpoint)
    assert checkpoint_copies("image_encoder.ln_pre.weight") == (
        "model.image_encoder.ln_pre.weight",
        "model.clip_model.vision_model.ln_pre.weight",
        "model.reward_head.clip_model.vision_model.ln_pre.weight",
    )
    assert checkpoint_copies("temporal_encoder.blocks.1.ff.out.bias") == (
        "model.temporal_encoder.attn.model.attn_layers.layers.3.1.net.3.bias",
    )


def _edited_checkpoint(golden, tmp_path, edit):
    data = torch.load(golden / "mineclip_video_tiny.pth", weights_only=True)
    state = {key: value.clone() for key, value in data["state_dict"].items()}
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": state}, path)
    return path


def test_copies_of_a_shared_tensor_that_differ_are_refused(golden, tmp_path, tiny_configs):
    def edit(state):
        state["model.reward_head.clip_model.vision_model.ln_pre.weight"] += 1.0
        state["model.reward_head.clip_model.logit_scale"] += 1.0

    path = _edited_checkpoint(golden, tmp_path, edit)
    with pytest.raises(WeightsError, match="2 differ") as caught:
        load_mineclip_video(path, config=tiny_configs[0], text_config=tiny_configs[1])
    message = str(caught.value)
    assert "model.reward_head.clip_model.vision_model.ln_pre.weight" in message
    assert "model.clip_model.logit_scale != model.reward_head.clip_model.logit_scale" in message


def test_missing_and_unexpected_keys_are_listed(golden, tmp_path, tiny_configs):
    def edit(state):
        del state["model.clip_model.vision_model.conv1.weight"]
        state["model.reward_head.text_adapter.0.weight"] = torch.zeros(64, 64)

    path = _edited_checkpoint(golden, tmp_path, edit)
    with pytest.raises(WeightsError) as caught:
        load_mineclip_video(path, config=tiny_configs[0], text_config=tiny_configs[1])
    message = str(caught.value)
    assert "1 missing: model.clip_model.vision_model.conv1.weight" in message
    assert "1 unexpected: model.reward_head.text_adapter.0.weight" in message
    # Sizes that do not fit the checkpoint are mis-shaped keys, not a crash.
    with pytest.raises(WeightsError, match="wrong shape"):
        load_mineclip_video(
            golden / "mineclip_video_tiny.pth",
            config=VideoTowerConfig(width=64, layers=2, embed_dim=64),
            text_config=tiny_configs[1],
        )


def test_the_loader_finds_attn_pth_in_the_weights_directory(golden, tmp_path, tiny_configs):
    with pytest.raises(WeightsError, match=r"attn\.pth not found"):
        load_mineclip_video(tmp_path)
    with pytest.raises(WeightsError, match="no such file or directory"):
        load_mineclip_video(tmp_path / "nothing.pth")
    # The tiny file under the official name is found, then refused by the published md5.
    shutil.copy(golden / "mineclip_video_tiny.pth", tmp_path / "attn.pth")
    with pytest.raises(WeightsError, match="md5"):
        load_mineclip_video(tmp_path, config=tiny_configs[0], text_config=tiny_configs[1])


def test_without_the_text_tower(golden, tiny_configs, tiny_model, io):
    model = load_mineclip_video(
        golden / "mineclip_video_tiny.pth",
        config=tiny_configs[0],
        text_config=tiny_configs[1],
        with_text=False,
    )
    assert model.text_model is None
    assert not any(key.startswith("text_model.") for key in model.state_dict())
    torch.testing.assert_close(
        model.encode_video(io["videos"]), tiny_model.encode_video(io["videos"])
    )
    with pytest.raises(ConfigurationError, match="no text tower"):
        model.encode_text(["chop a tree"])


def test_prompts_are_tokenized_for_encode_text(tiny_model):
    rows = torch.from_numpy(np.stack([ClipTokenizer().tokenize(p) for p in ("dig", "swim")]))
    torch.testing.assert_close(
        tiny_model.encode_text(["dig", "swim"]), tiny_model.encode_text(rows)
    )
    assert tiny_model.encode_text("dig").shape == (1, 64)


def test_bfloat16_follows_float32(golden, tiny_configs, tiny_model, io):
    model = load_mineclip_video(
        golden / "mineclip_video_tiny.pth",
        dtype=torch.bfloat16,
        config=tiny_configs[0],
        text_config=tiny_configs[1],
    )
    assert model.dtype == torch.bfloat16
    video = model.encode_video(io["videos"])
    assert video.dtype == torch.bfloat16
    cosine = torch.nn.functional.cosine_similarity(
        video.float(), tiny_model.encode_video(io["videos"]), dim=-1
    )
    assert bool((cosine > 0.99).all())


@pytest.mark.parametrize(
    ("clip", "found"),
    [
        (np.zeros((15, 160, 256, 3), np.uint8), r"\(15, 160, 256, 3\)"),
        (np.zeros((2, 17, 160, 256, 3), np.uint8), r"\(2, 17, 160, 256, 3\)"),
        (np.zeros((16, 160, 256, 3), np.float32), "float32"),
        (np.zeros((16, 160, 256, 4), np.uint8), r"\(16, 160, 256, 4\)"),
        (np.zeros((160, 256, 3), np.uint8), r"\(160, 256, 3\)"),
        (np.zeros((1, 1, 16, 160, 256, 3), np.uint8), r"\(1, 1, 16, 160, 256, 3\)"),
    ],
)
def test_a_clip_that_does_not_fit_is_a_clear_error(tiny_model, clip, found):
    with pytest.raises(ConfigurationError, match="A clip must be 16 uint8 RGB frames") as caught:
        tiny_model.encode_video(clip)
    assert caught.match(found)


def test_frames_and_features_that_do_not_fit_are_clear_errors(tiny_model):
    with pytest.raises(ConfigurationError, match=r"uint8 RGB frames of shape \(N, H, W, 3\)"):
        tiny_model.encode_frames(np.zeros((160, 256, 3), np.uint8))
    with pytest.raises(ConfigurationError, match="float64"):
        tiny_model.encode_frames(np.zeros((1, 160, 256, 3)))
    with pytest.raises(ConfigurationError, match=r"1 <= T <= 32"):
        tiny_model.pool(torch.zeros(1, 33, 64))
    with pytest.raises(ConfigurationError, match=r"\(B, T, 64\)"):
        tiny_model.pool(torch.zeros(1, 4, 65))
    with pytest.raises(ConfigurationError, match=r"text_features must be .* \(B, 64\)"):
        tiny_model.logits_per_video(torch.zeros(1, 64), torch.zeros(2, 3, 64))
    with pytest.raises(ConfigurationError, match=r"token rows of shape \(T, 77\)"):
        tiny_model.encode_text(torch.zeros(1, 76, dtype=torch.int64))


def test_sizes_that_cannot_be_built_are_refused():
    with pytest.raises(ConfigurationError, match="multiple of heads"):
        VideoTowerConfig(width=100, heads=3)
    with pytest.raises(ConfigurationError, match="multiples of patch_size"):
        VideoTowerConfig(frame_size=(150, 256))
    with pytest.raises(ConfigurationError, match="exceeds max_frames"):
        VideoTowerConfig(frames_per_clip=40)
    assert VideoTowerConfig().heads == 12
    assert VideoTowerConfig().grid == (10, 16)
    with pytest.raises(ConfigurationError, match="embed_dim"):
        MineCLIPVideo(VideoTowerConfig(embed_dim=64), TextTowerConfig(), device="meta")


def test_an_untrained_model_is_random_but_not_degenerate(tiny_configs, io):
    torch.manual_seed(0)
    model = MineCLIPVideo(*tiny_configs)
    assert model.dtype == torch.float32 and not model.logit_scale.requires_grad
    video = model.encode_video(io["videos"])
    text = model.encode_text(["chop a tree", "swim"])
    logits = model.logits_per_video(video, text)
    assert logits.shape == (3, 2) and bool(torch.isfinite(logits).all())
    assert float(text.norm(dim=-1).min()) > 0 and float(logits.std()) > 0
