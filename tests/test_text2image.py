"""Text-to-image (minidiff.text2image): tokenizer, cross-attention against a naive float64 reference,
the null caption, classifier-free guidance at w = 0 and w > 0, checkpoints, caption batches, held-out
combinations. All cheap (a tiny TextDiT)."""
import math

import pytest
import torch

from minidiff import glyphs as G
from minidiff import text2image as T
from minidiff.schedule import Schedule
from minidiff.train import ScheduleSpec, TrainState, load_weights, save_weights
from minidiff.unet import build_model, config_from_dict, config_to_dict

TINY = T.TextDiTConfig(image_size=8, patch_size=2, hidden=32, depth=2, heads=2, mlp_ratio=2, text_layers=1)


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = build_model(TINY)
    for p in m.parameters():  # leave the zero initialisation, so the conditioning matters in every test
        p.data.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _x(b=3, seed=1):
    return torch.randn((b, 1, 8, 8), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trips_every_caption_shape():
    caps = [G.caption(ch, fam, wt, sl) for ch in "aZ7" for fam in G.FAMILIES for wt in G.WEIGHTS for sl in G.SLANTS]
    tok = T.tokenize(caps)
    assert tok.shape == (len(caps), T.MAX_TOKENS) and tok.dtype == torch.int64
    assert T.detokenize(tok) == caps
    assert (tok[:, 0] == T.VOCAB.index("<cls>")).all()
    assert T.detokenize(T.null_tokens(2)) == ["", ""]
    assert T.tokenize("").tolist() == T.null_tokens(1).tolist()


def test_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="purple"):
        T.tokenize("purple serif capital R")
    with pytest.raises(ValueError, match="words"):
        T.tokenize("bold " * 8 + "R")
    with pytest.raises(ValueError, match="vocabulary"):
        T.tokenize("<pad> R")
    with pytest.raises(TypeError, match="captions"):
        T.tokenize(7)
    with pytest.raises(TypeError, match="integer"):
        T.detokenize(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="<cls>"):
        T.detokenize(torch.zeros(1, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, "):
        T.detokenize(torch.tensor([[1, 999]]))


# ---------------------------------------------------------------------------- cross-attention
def _naive_attention(attn, h, ctx, mask):
    """softmax(Q K^T / sqrt(d)) V per head in float64, masked keys dropped before the softmax."""
    H, D = attn.heads, h.shape[-1]
    d = D // H
    W = {n: getattr(attn, n).weight.double() for n in ("q", "kv", "proj")}
    b = {n: getattr(attn, n).bias.double() for n in ("q", "kv", "proj")}
    out = torch.zeros(h.shape, dtype=torch.float64)
    for i in range(h.shape[0]):
        q = h[i].double() @ W["q"].T + b["q"]
        kv = ctx[i][mask[i]].double() @ W["kv"].T + b["kv"]
        k, v = kv[:, :D], kv[:, D:]
        heads = []
        for j in range(H):
            s = q[:, j * d:(j + 1) * d] @ k[:, j * d:(j + 1) * d].T / math.sqrt(d)
            heads.append(torch.softmax(s, -1) @ v[:, j * d:(j + 1) * d])
        out[i] = torch.cat(heads, 1) @ W["proj"].T + b["proj"]
    return out


def test_cross_attention_matches_naive_reference_and_ignores_padding():
    torch.manual_seed(0)
    attn = T.CrossAttention(16, 4)
    h, ctx = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    attn.keep_maps = True
    out = attn(h, ctx, mask)
    assert out.shape == (2, 5, 16) and attn.maps.shape == (2, 4, 5, 6)
    torch.testing.assert_close(out.double(), _naive_attention(attn, h, ctx, mask), atol=1e-5, rtol=1e-5)
    assert (attn.maps[~mask[:, None, None, :].expand_as(attn.maps)] == 0).all()
    torch.testing.assert_close(attn.maps.sum(-1), torch.ones(2, 4, 5))
    ctx2 = ctx.clone()
    ctx2[~mask] = 100.0  # what sits under the padding cannot matter
    torch.testing.assert_close(attn(h, ctx2, mask), out)


def test_model_maps_and_padding_do_not_leak():
    m, x = _tiny(), _x()
    tok = T.tokenize(["bold serif capital R", "sans digit 7", ""])
    maps = T.cross_attention_maps(m, x, 500, tok)
    assert maps.shape == (TINY.depth, 3, TINY.heads, TINY.grid ** 2, T.MAX_TOKENS)
    pad = (tok == T.VOCAB.index("<pad>"))[None, :, None, None, :].expand_as(maps)
    assert (maps[pad] == 0).all()
    torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]))
    assert all(b.cross.maps is None and not b.cross.keep_maps for b in m.blocks)


# ---------------------------------------------------------------------------- null caption and guidance
def test_null_caption_is_the_unconditional_path_and_captions_matter():
    m, x, t = _tiny(), _x(), torch.tensor([10, 400, 900])
    with torch.no_grad():
        torch.testing.assert_close(m(x, t, None), m(x, t, T.null_tokens(3)))
        cond = m(x, t, T.tokenize(["bold serif capital R"] * 3))
    assert (cond - m(x, t, None)).abs().max() > 1e-3


def test_every_caption_word_reaches_the_adaln_conditioning():
    """Issue 19's defect: with the <cls> output as the only global path, "capital R" and "capital A" gave
    nearly the same conditioning vector. The bag of words is the float64 sum of the word embeddings
    (<cls> and <pad> excluded, the null caption exactly 0), so two captions that differ only in the
    character differ by exactly that character's embedding difference."""
    m = _tiny()
    tok = T.tokenize(["bold serif capital R", "bold serif capital A", ""])
    E = m.words.weight.detach().double()
    ref = torch.stack([sum(E[int(i)] for i in row if int(i) not in (0, 1)) if (row > 1).any()
                       else torch.zeros(E.shape[1], dtype=torch.float64) for row in tok])
    with torch.no_grad():
        bag = m.bag_of_words(tok).double()
    torch.testing.assert_close(bag, ref, atol=1e-5, rtol=1e-5)
    assert (bag[2] == 0).all()
    R, A = T.VOCAB.index("R"), T.VOCAB.index("A")
    torch.testing.assert_close(bag[0] - bag[1], E[R] - E[A], atol=1e-5, rtol=1e-5)


def test_caption_losses_see_whether_the_caption_is_used():
    m, s = _tiny(), Schedule.linear(T=1000)
    x = _x(6)
    tok = T.tokenize(["bold serif capital R", "stix digit 3", "monospace capital Q"] * 2)
    out = T.caption_losses(m, s, x, tok, seed=3)
    assert set(out) == {"caption", "null", "shuffled"} and all(math.isfinite(v) for v in out.values())
    assert out == T.caption_losses(m, s, x, tok, seed=3) and out["caption"] != out["null"]
    with torch.no_grad():  # the null entry is the unconditional model's loss on the same draws
        g = torch.Generator().manual_seed(3)
        t = torch.randint(0, 1000, (6,), generator=g)
        noise = torch.randn(x.shape, generator=g)
        ab = torch.tensor(s.alpha_bar, dtype=torch.float64)[t].float().view(-1, 1, 1, 1)
        ref = float(((m(ab.sqrt() * x + (1 - ab).sqrt() * noise, t, None) - noise) ** 2).mean())
    assert abs(out["null"] - ref) < 1e-5
    with pytest.raises(ValueError, match="one caption per image"):
        T.caption_losses(m, s, x, tok[:2])


def test_guidance_zero_is_conditional_and_w_mixes_eps():
    m, x, s = _tiny(), _x(), Schedule.linear(T=1000)
    tok = T.tokenize(["italic stix lowercase g", "stix digit 3", "monospace capital Q"])
    t = torch.full((3,), 300)
    with torch.no_grad():
        cond, uncond = m(x, t, tok), m(x, t, None)
    torch.testing.assert_close(T.caption_eps_model(m, s, tok, 0.0)(x, t), cond)
    torch.testing.assert_close(T.caption_eps_model(m, s, tok, None)(x, t), cond)
    torch.testing.assert_close(T.caption_eps_model(m, s, tok, 2.0)(x, t), 3.0 * cond - 2.0 * uncond, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="guidance_scale"):
        T.caption_eps_model(m, s, tok, -1.0)
    with pytest.raises(TypeError, match="TextDiT"):
        T.caption_eps_model(torch.nn.Linear(2, 2), s, tok)


def test_model_rejects_bad_captions():
    m, x = _tiny(), _x()
    with pytest.raises(ValueError, match="one caption per sample"):
        m(x, 0, T.tokenize(["sans digit 1"]))
    with pytest.raises(TypeError, match="integer"):
        m(x, 0, torch.zeros(3, T.MAX_TOKENS))
    with pytest.raises(ValueError, match="TextDiTConfig.image_size"):
        T.TextDiTConfig(image_size=9, patch_size=2)


# ---------------------------------------------------------------------------- checkpoints
def test_weights_round_trip(tmp_path):
    m, x = _tiny(), _x()
    assert config_from_dict(config_to_dict(TINY)) == TINY
    save_weights(tmp_path / "t2i.safetensors", m, ScheduleSpec(), note="test")
    back, schedule, meta = load_weights(tmp_path / "t2i.safetensors")
    assert isinstance(back, T.TextDiT) and back.config == TINY and meta["model"]["kind"] == "text_dit"
    tok = T.tokenize(["bold serif capital R"] * 3)
    with torch.no_grad():
        torch.testing.assert_close(back(x, 7, tok), m(x, 7, tok), atol=0, rtol=0)


# ---------------------------------------------------------------------------- training data
def test_caption_batches_are_deterministic_and_drop_to_the_null_caption():
    s = Schedule.linear(T=1000)
    x = torch.randn(50, 1, 8, 8)
    tok = T.tokenize(["sans digit 1"] * 50)
    a = T._caption_batch(3, 5, x, tok, s, 400, 0.25)
    b = T._caption_batch(3, 5, x, tok, s, 400, 0.25)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("x0", "y", "time", "noise"))
    null = (a.y == T.null_tokens(1)).all(1)
    assert set(T.detokenize(a.y)) == {"", "sans digit 1"}
    assert 0.15 < float(null.double().mean()) < 0.35          # binomial(400, 0.25): sd 0.022
    assert not T._caption_batch(3, 5, x, tok, s, 400, 0.0).y.eq(T.null_tokens(1)).all(1).any()


def test_held_out_combinations_are_found():
    def labels(ch, fam, wt, sl):
        t = lambda v: torch.tensor([v])  # noqa: E731
        return G.GlyphLabels(char=t(G.CHARSET.index(ch)), case=t(0), family=t(G.FAMILIES.index(fam)),
                             weight=t(G.WEIGHTS.index(wt)), slant=t(G.SLANTS.index(sl)), font=t(0),
                             jitter=torch.zeros(1, 5))
    assert bool(T.is_held_out(labels("R", "serif", "bold", "italic"))[0])
    for other in (("R", "serif", "bold", "upright"), ("R", "sans", "bold", "italic"), ("B", "serif", "bold", "italic")):
        assert not bool(T.is_held_out(labels(*other))[0])


def test_a_few_training_steps_run_and_are_reproducible():
    s = Schedule.linear(T=1000)
    x = torch.randn(20, 1, 8, 8)
    tok = T.tokenize(["sans digit 1", "bold serif capital R"] * 10)

    def run():
        torch.manual_seed(0)
        st = TrainState.create(build_model(TINY), lr=1e-3)
        return [r.loss for r in T.train_text2image(st, x, tok, s, steps=3, batch_size=8, warmup=1)], st
    (l1, s1), (l2, _) = run(), run()
    assert l1 == l2 and len(l1) == 3 and s1.step == 3 and all(math.isfinite(v) for v in l1)


def test_prompts_cover_every_character_and_avoid_held_out():
    caps, attrs = T.prompts(2, seed=3)
    assert len(caps) == 2 * len(G.CHARSET) and sorted(attrs["char"].tolist()) == sorted(list(range(62)) * 2)
    combos = {(G.CHARSET[c], G.FAMILIES[f], G.WEIGHTS[w], G.SLANTS[s])
              for c, f, w, s in zip(*(attrs[k].tolist() for k in ("char", "family", "weight", "slant")))}
    assert not combos & set(T.HELD_OUT)
    assert caps == [G.caption(*c) for c in zip(*([G.CHARSET[i] for i in attrs["char"]],
                                                  [G.FAMILIES[i] for i in attrs["family"]],
                                                  [G.WEIGHTS[i] for i in attrs["weight"]],
                                                  [G.SLANTS[i] for i in attrs["slant"]]))]
    held_caps, held = T.prompts(3, held_out=True)
    assert held_caps == [G.caption(*c) for c in T.HELD_OUT for _ in range(3)]


def test_adherence_counts_what_the_classifier_reads():
    from minidiff.discrete import wilson_interval
    from minidiff.metrics import classify_glyphs

    x, lab = G.load_glyphs("test", 16, n=120)
    attrs = {k: getattr(lab, k) for k in ("char", "family", "weight", "slant")}
    adh, pred = T.adherence(x, attrs), classify_glyphs(x)
    for head, p in adh.items():
        k = int((pred[head] == attrs[head]).sum())
        assert (p.k, p.n) == (k, 120) and (p.low, p.high) == pytest.approx(wilson_interval(k, 120))
    wrong = dict(attrs, char=(attrs["char"] + 1) % 62)
    assert T.adherence(x, wrong)["char"].value < 0.1 < adh["char"].value
    with pytest.raises(ValueError, match="one value per sample"):
        T.adherence(x, {"char": attrs["char"][:5]})
