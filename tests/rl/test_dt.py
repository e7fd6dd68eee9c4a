import ast
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.rl.data import TrajectoryWindows
from anyformer.rl.dt import DecisionTransformer, DTConfig
from anyformer.rl.tokenizer import TrajectoryTokenizer, TrajectoryTokenizerConfig
from anyformer.rl.trajectories import Trajectories, returns_to_go

K = 5


def tiny_config(**overrides) -> DTConfig:
    transformer = TransformerConfig(dim=16, n_layers=2, n_heads=2, position="none", max_seq_len=64)
    settings = dict(obs_shape=(3,), n_actions=4, context_len=K, max_timestep=50, rtg_scale=10.0)
    return DTConfig(**(settings | {"transformer": transformer} | overrides))


def random_inputs(cfg: DTConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    steps = cfg.context_len
    if cfg.action_kind == "discrete":
        actions = torch.randint(cfg.n_actions, (batch, steps), generator=gen)
    else:
        actions = torch.randn(batch, steps, cfg.action_dim, generator=gen)
    return {
        "returns_to_go": torch.rand(batch, steps, generator=gen) * 3,
        "states": torch.randn(batch, steps, *cfg.obs_shape, generator=gen),
        "actions": actions,
        "timesteps": torch.randint(cfg.max_timestep - steps, (batch, 1), generator=gen) + torch.arange(steps),
    }


def model_for(cfg: DTConfig) -> DecisionTransformer:
    torch.manual_seed(0)
    return DecisionTransformer(cfg).eval()


def reference_token(tokenizer: TrajectoryTokenizer, embedding: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """LayerNorm(modality embedding + timestep embedding), from the raw parameters."""
    summed = embedding + tokenizer.timestep_embedding.weight[timestep]
    return F.layer_norm(summed, summed.shape[-1:], tokenizer.norm.weight, tokenizer.norm.bias, tokenizer.norm.eps)


def test_tokens_interleave_return_state_action_per_step_at_exact_positions():
    cfg = tiny_config()
    tokenizer = model_for(cfg).tokenizer
    inputs = random_inputs(cfg)
    tokens = tokenizer(**inputs)
    assert tokens.shape == (2, 3 * K, 16)
    w_r, b_r = tokenizer.return_embedding.weight[:, 0], tokenizer.return_embedding.bias
    w_s, b_s = tokenizer.state_embedding.proj.weight, tokenizer.state_embedding.proj.bias
    for t in range(K):
        time = inputs["timesteps"][:, t]
        expected_r = reference_token(tokenizer, inputs["returns_to_go"][:, t, None] * w_r + b_r, time)
        expected_s = reference_token(tokenizer, inputs["states"][:, t] @ w_s.T + b_s, time)
        expected_a = reference_token(tokenizer, tokenizer.action_embedding.weight[inputs["actions"][:, t]], time)
        torch.testing.assert_close(tokens[:, 3 * t], expected_r)
        torch.testing.assert_close(tokens[:, 3 * t + 1], expected_s)
        torch.testing.assert_close(tokens[:, 3 * t + 2], expected_a)


def test_behavior_cloning_interleaves_state_action_without_return_tokens():
    cfg = tiny_config(behavior_cloning=True)
    tokenizer = model_for(cfg).tokenizer
    assert tokenizer.return_embedding is None and cfg.n_tokens == 2 * K
    inputs = random_inputs(cfg)
    tokens = tokenizer(**inputs)
    assert tokens.shape == (2, 2 * K, 16)
    proj = tokenizer.state_embedding.proj
    for t in range(K):
        time = inputs["timesteps"][:, t]
        torch.testing.assert_close(tokens[:, 2 * t], reference_token(tokenizer, proj(inputs["states"][:, t]), time))
        action = tokenizer.action_embedding.weight[inputs["actions"][:, t]]
        torch.testing.assert_close(tokens[:, 2 * t + 1], reference_token(tokenizer, action, time))
    # The returns-to-go are not read at all.
    torch.testing.assert_close(tokenizer(**(inputs | {"returns_to_go": inputs["returns_to_go"] * 7})), tokens)


def test_dataset_returns_to_go_reach_the_return_tokens():
    """A window's R tokens carry returns_to_go(episode rewards)[t] / rtg_scale of its own episode."""
    rng = np.random.default_rng(0)
    lengths = [7, 4, 9]
    rewards = rng.integers(-3, 6, sum(lengths)).astype(np.float32)
    ends = np.cumsum(lengths) - 1
    data = Trajectories(
        observations=rng.normal(size=(sum(lengths), 3)),
        actions=rng.integers(4, size=sum(lengths)),
        rewards=rewards,
        terminations=np.isin(np.arange(sum(lengths)), ends),
        truncations=np.zeros(sum(lengths), bool),
        episode_starts=np.concatenate([[0], ends[:-1] + 1]),
    )
    cfg = tiny_config()
    windows = TrajectoryWindows(data, np.arange(3), K, cfg.rtg_scale)
    tokenizer = model_for(cfg).tokenizer
    for index in range(len(windows)):
        item = windows[index]
        episode = int(np.searchsorted(data.episode_starts, windows.ends[index], side="right") - 1)
        t_end = windows.ends[index] - data.episode_starts[episode]
        steps = np.arange(t_end - K + 1, t_end + 1)
        real = steps >= 0
        expected = returns_to_go(data.episode(episode).rewards)[steps[real]] / cfg.rtg_scale
        np.testing.assert_allclose(item["returns_to_go"][torch.from_numpy(real)].numpy(), expected, rtol=1e-6)
        np.testing.assert_array_equal(item["keep"].numpy(), real)
        batch = {key: value[None] for key, value in item.items() if key != "keep"}
        r_tokens = tokenizer(**batch)[0, 0::3]  # (K, D)
        w, b = tokenizer.return_embedding.weight[:, 0], tokenizer.return_embedding.bias
        times = batch["timesteps"][0, real]
        expected_tokens = reference_token(tokenizer, torch.tensor(expected)[:, None] * w + b, times)
        torch.testing.assert_close(r_tokens[torch.from_numpy(real)], expected_tokens)


@pytest.mark.parametrize("behavior_cloning", [False, True])
def test_predictions_never_see_the_future_across_modalities(behavior_cloning):
    cfg = tiny_config(behavior_cloning=behavior_cloning)
    model = model_for(cfg)
    inputs = random_inputs(cfg, batch=3)
    base = model(**inputs)
    assert base.shape == (3, K, cfg.n_actions)
    for t in range(K):
        changed_action = inputs["actions"].clone()
        changed_action[:, t] = (changed_action[:, t] + 1) % cfg.n_actions
        out = model(**(inputs | {"actions": changed_action}))
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=0)  # a_t: not at s_t or earlier
        if t + 1 < K:
            assert not torch.allclose(out[:, t + 1], base[:, t + 1]), "a_t must inform the prediction at s_{t+1}"
        changed_state = inputs["states"].clone()
        changed_state[:, t] += 1.0
        out = model(**(inputs | {"states": changed_state}))
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], base[:, t]), "s_t must inform the prediction at s_t"
        changed_return = inputs["returns_to_go"].clone()
        changed_return[:, t] += 1.0
        out = model(**(inputs | {"returns_to_go": changed_return}))
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)  # R_t: not for steps before t
        if not behavior_cloning:
            assert not torch.allclose(out[:, t], base[:, t]), "R_t must inform the prediction at s_t"
        else:
            torch.testing.assert_close(out, base, rtol=0, atol=0)


def test_left_padding_is_invisible_to_real_steps():
    """A window padded at the episode start predicts exactly what the unpadded steps alone predict."""
    cfg = tiny_config()
    model = model_for(cfg)
    inputs = random_inputs(cfg, batch=1)
    pad = 2
    keep = torch.arange(K)[None] >= pad

    def fill_padding(seed: int) -> dict[str, torch.Tensor]:
        garbage = random_inputs(cfg, batch=1, seed=seed)
        return {
            key: torch.where(keep.view(1, K, *[1] * (value.dim() - 2)), value, garbage[key])
            for key, value in inputs.items()
        }

    out = model(**fill_padding(1), keep=keep)
    assert torch.isfinite(out).all()
    shorter = DecisionTransformer(tiny_config(context_len=K - pad)).eval()
    shorter.load_state_dict(model.state_dict())
    expected = shorter(**{key: value[:, pad:] for key, value in inputs.items()})
    torch.testing.assert_close(out[:, pad:], expected)
    torch.testing.assert_close(model(**fill_padding(2), keep=keep)[:, pad:], out[:, pad:], rtol=0, atol=1e-6)


def test_frame_observations_use_the_conv_encoder_and_stay_causal():
    cfg = tiny_config(obs_shape=(4, 10, 10), obs_kind="frame", n_actions=3, frame_channels=8)
    model = model_for(cfg)
    inputs = random_inputs(cfg)
    inputs["states"] = (inputs["states"] > 1).float()
    base = model(**inputs)
    assert base.shape == (2, K, 3)
    frames = inputs["states"].clone()
    frames[:, 3] = 1 - frames[:, 3]
    out = model(**(inputs | {"states": frames}))
    torch.testing.assert_close(out[:, :3], base[:, :3], rtol=0, atol=0)
    assert not torch.allclose(out[:, 3], base[:, 3])


def test_continuous_actions_are_embedded_linearly_and_predicted_as_vectors():
    cfg = tiny_config(action_kind="continuous", n_actions=0, action_dim=2)
    model = model_for(cfg)
    out = model(**random_inputs(cfg))
    assert out.shape == (2, K, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"obs_kind": "pixels"}, "obs_kind='pixels'"),
        ({"obs_kind": "frame"}, "obs_shape=(3,) does not fit obs_kind='frame'"),
        ({"action_kind": "discrete", "n_actions": 0}, "n_actions must be >= 1"),
        ({"action_kind": "continuous", "action_dim": 0}, "action_dim must be >= 1"),
        ({"context_len": 30}, "needs 90 tokens but transformer.max_seq_len=64"),
        ({"rtg_scale": 0.0}, "rtg_scale must be > 0"),
    ],
)
def test_config_errors_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_config(**overrides)


def test_timesteps_outside_the_embedding_are_an_error():
    cfg = tiny_config()
    inputs = random_inputs(cfg)
    inputs["timesteps"][0, -1] = cfg.max_timestep
    with pytest.raises(ValueError, match=r"timesteps must be in \[0, max_timestep=50\)"):
        model_for(cfg)(**inputs)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"behavior_cloning": True}, {"obs_shape": (4, 10, 10), "obs_kind": "frame", "frame_channels": 8},
     {"action_kind": "continuous", "n_actions": 0, "action_dim": 2}],
)  # fmt: skip
def test_the_tokenizer_is_built_from_its_own_config_without_the_models(overrides):
    cfg = tiny_config(**overrides)
    tree = ast.parse(inspect.getsource(inspect.getmodule(TrajectoryTokenizer)))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "anyformer.rl.dt" not in imported  # the tokenizer knows nothing of the model's config
    own = TrajectoryTokenizerConfig(
        dim=16, obs_shape=cfg.obs_shape, obs_kind=cfg.obs_kind, action_kind=cfg.action_kind, n_actions=cfg.n_actions,
        action_dim=cfg.action_dim, max_timestep=50, behavior_cloning=cfg.behavior_cloning,
        frame_channels=cfg.frame_channels,
    )  # fmt: skip
    assert cfg.tokenizer_config == own
    model = model_for(cfg)
    standalone = TrajectoryTokenizer(own)
    expected = {name: value.shape for name, value in model.tokenizer.state_dict().items()}
    assert {name: value.shape for name, value in standalone.state_dict().items()} == expected
    standalone.load_state_dict(model.tokenizer.state_dict())
    inputs = random_inputs(cfg)
    torch.testing.assert_close(standalone(**inputs), model.tokenizer(**inputs), rtol=0, atol=0)


def test_state_dict_keys_are_those_of_existing_checkpoints():
    """Checkpoints written before the tokenizer had its own config must still load."""
    names = set(model_for(tiny_config()).state_dict())
    block = {name.removeprefix("decoder.blocks.0.") for name in names if name.startswith("decoder.blocks.0.")}
    assert names - {name for name in names if name.startswith("decoder.blocks.")} == {
        "tokenizer.return_embedding.weight", "tokenizer.return_embedding.bias",
        "tokenizer.state_embedding.proj.weight", "tokenizer.state_embedding.proj.bias",
        "tokenizer.action_embedding.weight", "tokenizer.timestep_embedding.weight",
        "tokenizer.norm.weight", "tokenizer.norm.bias", "decoder.final_norm.weight", "decoder.final_norm.bias",
        "action_head.weight", "action_head.bias",
    }  # fmt: skip
    assert {name.split(".")[0] for name in block} == {"norm1", "attn", "norm2", "mlp"}


def test_forward_is_the_action_head_over_forward_features_and_its_maps():
    cfg = tiny_config()
    model, inputs = model_for(cfg), random_inputs(cfg)
    keep = torch.arange(K)[None].expand(2, K) >= 1
    maps = AttentionMaps()
    with torch.no_grad():
        features = model.forward_features(**inputs, keep=keep, maps=maps)
        assert features.shape == (2, 3 * K, 16)
        torch.testing.assert_close(model(**inputs, keep=keep), model.action_head(features[:, 1::3]))
    assert len(maps.self_attn) == 2 and maps.self_attn[0].shape == (2, 2, 3 * K, 3 * K)
    probs = maps.self_attn[-1]
    assert torch.equal(probs[:, :, 3:, :3], torch.zeros_like(probs[:, :, 3:, :3]))  # real tokens skip the padded step
    assert torch.equal(probs.triu(1), torch.zeros_like(probs))  # causal
