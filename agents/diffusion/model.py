"""Joint denoiser: an observation/inbox encoder and a transformer over member × time-chunk tokens.

Shapes: B scenes, N members, H plan steps, C = H / chunk time chunks, K inbox slots, d model width.

- ``encode`` turns each member's own observation, start state, length and received messages into its
  conditioning (B, N, P): a token bias and the conditioning part of every AdaLN modulation. It is strictly
  per member (an MLP plus a masked attention pool over that member's inbox), so it runs once per ``plan()``
  call and is reused by every denoising step.
- ``denoise`` maps noisy normalised actions (B, N, H, 2) and a diffusion step to the clean estimate x̂0.
  Each block does (1) self-attention over the C chunks of one member, (2) self-attention over members at the
  same chunk, masked by the comm graph: member i attends to j only if comm_mask[b, i, j] and j is present,
  and always to itself, (3) an MLP. Every sub-layer is modulated per member by AdaLN-Zero; the modulation is
  a linear function of the member's conditioning plus one of the diffusion-step embedding, so the
  conditioning part is computed by ``encode`` once and each step adds only the step part.

Nothing mixes members except the masked member attention: no batch statistics, no pooled platoon token, no
member-index embedding (so parameters are shared and any N works). A masked key gets weight exp(−inf) = 0
exactly, which is why an isolated member's output does not change, bit for bit, when others' inputs do.
Inputs of absent members and of empty inbox slots are replaced by zeros before use, so NaN padding cannot leak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from diffplatoon.agents.diffusion.kinematics import ACTION_DIM


@dataclass(frozen=True)
class DenoiserConfig:
    """Sizes of the joint denoiser.

    Attributes:
        obs_dim: width of one member's observation vector.
        msg_dim: width of one V2V message.
        d_model: token width.
        n_layers: transformer blocks (each = time attention + member attention + MLP).
        n_heads: attention heads.
        mlp_ratio: hidden width of the MLPs as a multiple of d_model.
        chunk: plan steps per token; the horizon must be a multiple of it.
        max_horizon: largest horizon the learned chunk-position table covers.
    """

    obs_dim: int
    msg_dim: int
    d_model: int = 128
    n_layers: int = 3
    n_heads: int = 4
    mlp_ratio: int = 4
    chunk: int = 5
    max_horizon: int = 80


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim) of integer diffusion steps."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat((torch.sin(args), torch.cos(args)), dim=-1)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.SiLU(), nn.Linear(d_hidden, d_out))


class ObservationEncoder(nn.Module):
    """Per-member conditioning: MLP(obs, ego) plus an attention pool over that member's received messages."""

    def __init__(self, obs_dim: int, msg_dim: int, ego_dim: int, d: int):
        super().__init__()
        self.obs_mlp = _mlp(obs_dim + ego_dim, d, d)
        self.msg_mlp = _mlp(msg_dim, d, d)
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.fuse = _mlp(2 * d, d, d)

    def forward(self, obs: torch.Tensor, ego: torch.Tensor, inbox: torch.Tensor, inbox_mask: torch.Tensor) -> torch.Tensor:
        """obs (B,N,D), ego (B,N,E), inbox (B,N,K,M), inbox_mask (B,N,K) → (B,N,d)."""
        h = self.obs_mlp(torch.cat((obs, ego), dim=-1))  # (B,N,d)
        m = self.msg_mlp(inbox)  # (B,N,K,d)
        scores = torch.einsum("bnd,bnkd->bnk", self.query(h), self.key(m)) / math.sqrt(h.shape[-1])
        scores = scores.masked_fill(~inbox_mask, float("-inf"))
        # An empty inbox gives an all −inf row: its softmax is NaN, so weights are set to 0 (pool = 0) instead.
        any_msg = inbox_mask.any(-1, keepdim=True)
        w = torch.where(any_msg, torch.softmax(torch.where(any_msg, scores, 0.0), dim=-1), 0.0)
        pooled = torch.einsum("bnk,bnkd->bnd", w, m)
        return self.fuse(torch.cat((h, pooled), dim=-1))


class _Attention(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, n_query: int | None = None) -> torch.Tensor:
        """x (S, L, d), mask (S, L, L): boolean, True = may attend, or additive (0 or −inf) → (S, L, d).

        ``n_query``: only the first n_query positions attend (keys and values still cover all L) → (S, n_query, d).
        """
        s, l, d = x.shape
        heads, dh = self.n_heads, d // self.n_heads
        attn_mask = None if mask is None else mask[:, None]
        if n_query is None or n_query >= l:
            q, k, v = self.qkv(x).view(s, l, 3, heads, dh).permute(2, 0, 3, 1, 4)
            n_query = l
        else:
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :n_query], w[:d], b[:d]).view(s, n_query, heads, dh).transpose(1, 2)
            k, v = F.linear(x, w[d:], b[d:]).view(s, l, 2, heads, dh).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(s, n_query, d))


def chunk_attention_mask(member_attn_mask: torch.Tensor, chunks: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B,N,N) bool member mask → the additive mask (B·chunks, N, N) of the member attention at every chunk (0 where
    i may attend to j, −inf where not: what the attention makes of a boolean mask, built once for all blocks)."""
    b, n, _ = member_attn_mask.shape
    bias = torch.zeros(member_attn_mask.shape, dtype=dtype, device=member_attn_mask.device)
    bias = bias.masked_fill(~member_attn_mask, float("-inf"))
    return bias[:, None].expand(b, chunks, n, n).reshape(b * chunks, n, n)


class _Block(nn.Module):
    """Time attention within a member, comm-masked attention across members, MLP; AdaLN-Zero per member."""

    N_MODS = 9  # (shift, scale, gate) for each of the three sub-layers

    def __init__(self, d: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.time_attn = _Attention(d, n_heads)
        self.member_attn = _Attention(d, n_heads)
        self.mlp = _mlp(d, mlp_ratio * d, d)

    def forward(self, x: torch.Tensor, m: tuple[torch.Tensor, ...], member_attn_mask: torch.Tensor,
                n_query: int | None = None, chunk_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,N,C,d) tokens, m 9 × (B,N,1,d) = (shift, 1 + scale, gate) × 3, member_attn_mask (B,N,N).

        ``n_query``: only the first n_query chunks are computed (they still attend to all C) → (B,N,n_query,d).
        ``chunk_mask``: `chunk_attention_mask` of member_attn_mask for the chunks computed, when precomputed.
        """
        b, n, ch, d = x.shape
        h = torch.addcmul(m[0], self.norm(x), m[1])
        if n_query is None or n_query >= ch:
            x = torch.addcmul(x, m[2], self.time_attn(h.reshape(b * n, ch, d)).view(b, n, ch, d))
        else:
            y = self.time_attn(h.reshape(b * n, ch, d), n_query=n_query).view(b, n, n_query, d)
            ch = n_query
            x = torch.addcmul(x[:, :, :ch], m[2], y)

        if chunk_mask is None:
            chunk_mask = chunk_attention_mask(member_attn_mask, ch, x.dtype)
        h = torch.addcmul(m[3], self.norm(x), m[4]).transpose(1, 2).reshape(b * ch, n, d)
        y = self.member_attn(h, chunk_mask).view(b, ch, n, d).transpose(1, 2)
        x = torch.addcmul(x, m[5], y).contiguous()

        h = torch.addcmul(m[6], self.norm(x), m[7])
        return torch.addcmul(x, m[8], self.mlp(h))


class JointDenoiser(nn.Module):
    """Encoder + transformer denoiser predicting clean normalised actions x̂0 (B, N, H, 2)."""

    EGO_DIM = 5  # [x, y, heading, speed, length], normalised

    def __init__(self, config: DenoiserConfig):
        super().__init__()
        if config.d_model % config.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        self.config = config
        d = config.d_model
        n_mod = config.n_layers * _Block.N_MODS * d + 2 * d  # every block's modulation + the final layer's
        self.encoder = ObservationEncoder(config.obs_dim, config.msg_dim, self.EGO_DIM, d)
        self.time_mlp = _mlp(d, d, d)
        # AdaLN modulation = cond_modulation(silu(cond)) + time_modulation(silu(step embedding)): the first term
        # is computed once per plan() call, only the (B, ·) second term once per denoising step.
        self.cond_modulation = nn.Linear(d, n_mod)
        self.time_modulation = nn.Linear(d, n_mod, bias=False)
        self.cond_token = nn.Linear(d, d)
        self.token_in = nn.Linear(config.chunk * ACTION_DIM, d)
        self.chunk_pos = nn.Parameter(torch.randn(config.max_horizon // config.chunk, d) * 0.02)
        self.blocks = nn.ModuleList(_Block(d, config.n_heads, config.mlp_ratio) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.token_out = nn.Linear(d, config.chunk * ACTION_DIM)
        for layer in (self.cond_modulation, self.time_modulation, self.token_out):
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        # The "1 +" of every AdaLN scale, added once in encode() so the blocks need one addcmul per modulation.
        offset = torch.zeros(n_mod)
        for k in range(config.n_layers):
            offset[(k * _Block.N_MODS + 1) * d : (k * _Block.N_MODS + 2) * d] = 1.0
            offset[(k * _Block.N_MODS + 4) * d : (k * _Block.N_MODS + 5) * d] = 1.0
            offset[(k * _Block.N_MODS + 7) * d : (k * _Block.N_MODS + 8) * d] = 1.0
        offset[config.n_layers * _Block.N_MODS * d + d :] = 1.0  # final layer: (shift, 1 + scale)
        self.register_buffer("mod_offset", offset, persistent=False)

    def encode(
        self,
        obs: torch.Tensor,
        ego: torch.Tensor,
        inbox: torch.Tensor,
        inbox_mask: torch.Tensor,
        member_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Normalised obs (B,N,D), ego (B,N,5), inbox (B,N,K,M), bool masks → per-member conditioning (B,N,P).

        The result packs the token bias (d) and the conditioning part of every AdaLN modulation; it depends
        on nothing but the member's own inputs and is reused by every denoising step.
        """
        inbox_mask = inbox_mask & member_mask[..., None]
        obs = torch.where(member_mask[..., None], obs, 0.0)
        ego = torch.where(member_mask[..., None], ego, 0.0)
        inbox = torch.where(inbox_mask[..., None], inbox, 0.0)
        c = F.silu(self.encoder(obs, ego, inbox, inbox_mask))
        return torch.cat((self.cond_token(c), self.cond_modulation(c) + self.mod_offset), dim=-1)

    @staticmethod
    def member_attention_mask(comm_mask: torch.Tensor, member_mask: torch.Tensor) -> torch.Tensor:
        """(B,N,N) bool: i may attend to j if i hears j and j is present; always to itself."""
        eye = torch.eye(comm_mask.shape[-1], dtype=torch.bool, device=comm_mask.device)
        return (comm_mask.bool() & member_mask[:, None, :]) | eye

    def time_conditioning(self, t: torch.Tensor) -> torch.Tensor:
        """Diffusion steps t (S,) → the step part of every AdaLN modulation (S, P−d)."""
        temb = F.silu(self.time_mlp(sinusoidal_embedding(t, self.config.d_model)))
        return self.time_modulation(temb)

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        member_attn_mask: torch.Tensor,
        member_mask: torch.Tensor,
        time_cond: torch.Tensor | None = None,
        out_steps: int | None = None,
    ) -> torch.Tensor:
        """Noisy normalised actions x_t (B,N,H,2), steps t (B,), cond from ``encode`` → x̂0 (B,N,H,2).

        ``time_cond`` (B or 1, P−d) = ``time_conditioning(t)`` may be passed precomputed (a sampler computes
        all its steps in one call). Absent members output 0. ``out_steps``: return only the first
        ``out_steps`` plan steps of x̂0 (B,N,out_steps,2), the same values as the full output's; the last
        block then computes only the chunks that hold them (a log-probability of the executed steps needs
        no more).
        """
        b, n, horizon, _ = x_t.shape
        d = self.config.d_model
        ch = horizon // self.config.chunk
        if horizon % self.config.chunk or ch > self.chunk_pos.shape[0]:
            raise ValueError(f"horizon {horizon} must be a multiple of {self.config.chunk} and <= {self.config.max_horizon}")
        x_t = torch.where(member_mask[..., None, None], x_t, 0.0)
        if time_cond is None:
            time_cond = self.time_conditioning(t)
        # split (not slicing) so the backward pass concatenates the pieces' gradients instead of
        # zero-filling a full-width gradient per slice
        cond_token, cond_mod = cond.split((d, cond.shape[-1] - d), dim=-1)
        mods = (cond_mod + time_cond[:, None, :])[:, :, None, :].split(d, dim=-1)  # (9·layers + 2) × (B,N,1,d)
        tokens = self.token_in(x_t.reshape(b, n, ch, -1)) + self.chunk_pos[:ch] + cond_token[:, :, None, :]  # (B,N,C,d)
        n_query = None
        if out_steps is not None and out_steps < horizon:
            n_query = -(-out_steps // self.config.chunk)
        last = len(self.blocks) - 1
        chunk_mask = chunk_attention_mask(member_attn_mask, ch, tokens.dtype)
        for k, block in enumerate(self.blocks):
            tokens = block(tokens, mods[k * _Block.N_MODS : (k + 1) * _Block.N_MODS], member_attn_mask,
                           n_query=n_query if k == last else None,
                           chunk_mask=None if k == last and n_query is not None else chunk_mask)
        shift, scale = mods[-2:]
        steps = tokens.shape[2] * self.config.chunk
        out = self.token_out(torch.addcmul(shift, self.final_norm(tokens), scale)).reshape(b, n, steps, ACTION_DIM)
        if n_query is not None and steps > out_steps:
            out = out[:, :, :out_steps]
        return torch.where(member_mask[..., None, None], out, 0.0)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        obs: torch.Tensor,
        ego: torch.Tensor,
        inbox: torch.Tensor,
        inbox_mask: torch.Tensor,
        comm_mask: torch.Tensor,
        member_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Encode and denoise in one call (training path); all inputs already normalised."""
        cond = self.encode(obs, ego, inbox, inbox_mask, member_mask)
        return self.denoise(x_t, t, cond, self.member_attention_mask(comm_mask, member_mask), member_mask)
