"""The assembled MoME (OFFICIAL.md § Architecture, "prompt"): MoVE's visual tokens in the release's prompt, fed to a
LLaMA-family LLM whose FFNs carry MoLE.

    template "mome" (the release; the question's <image> placeholder, if any, is dropped):
        tokens = [BOS] enc("USER: <Img>") [F_0 … F_L] enc("</Img>") enc("{question} ASSISTANT: ") enc(answer) [EOS]
    template "vicuna_v1" (ours; "<image>\\n" is prepended to the prompt if absent):
        tokens = [BOS] enc("{system} USER: {before}") [F_0 … F_L] enc("{after} ASSISTANT:") enc(answer) [EOS]
    loss   = mean cross-entropy over the answer tokens and EOS only (+ MoLE's load-balance loss when on)

Each piece is tokenised on its own, as the release does; F_0 is the EVA CLS token. Sequences longer than
``language.max_length`` (the release: 600) are cut on the right.

Trainable: ADT, projectors, soft router, adapters and MoLE routers (and the LLM when ``language.train``, which the
tiny preset needs because its LLM is random). Frozen: the encoders, the LLM otherwise, the sentence encoder (kept
outside the module tree).

Checkpoints (`save_pretrained` / `from_pretrained`): ``config.yaml`` (the full config), ``tokenizer.model`` and
``model.safetensors`` holding the trainable weights plus every randomly initialised base part (a part without a
checkpoint path), so a load round-trips bit-exactly; parts with a path are referenced by it, not copied. Loading
uses safetensors only (nothing is unpickled) and checks the tensor names and shapes against the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mome.model.config import MoMEConfig
from mome.model.encoders import _dtype, build_encoder, build_preprocessor
from mome.model.mole import (attach_mole, mole_aux_loss, mole_modules, replicate_adapter, resize_experts,
                             routing_context)
from mome.model.move import MoVE
from mome.model.specialists import resolve_path
from mome.model.tokenizer import SYSTEM, Tokenizer

__all__ = ["MoME", "MoMEOutput", "CheckpointError", "IMAGE_TOKEN", "build_prompt", "load_official_state"]

IMAGE_TOKEN = "<image>"
IGNORE = -100
CHECKPOINT_FORMAT = "mome-1"


class CheckpointError(ValueError):
    """A checkpoint does not match the model its config describes."""


def build_prompt(prompt: str, template: str = "mome") -> tuple[str, str]:
    """The text before and after the visual tokens for one user turn: the release's ``USER: <Img>`` …
    ``</Img>{question} ASSISTANT: `` (``"mome"``) or Vicuna v1's conversation split at the placeholder
    (``"vicuna_v1"``)."""
    if prompt.count(IMAGE_TOKEN) > 1:
        raise ValueError(f"a prompt may hold one {IMAGE_TOKEN} placeholder, got {prompt.count(IMAGE_TOKEN)}: {prompt!r}")
    if template == "mome":
        return "USER: <Img>", instruction_text(prompt) + " ASSISTANT: "
    if template != "vicuna_v1":
        raise ValueError(f"template must be 'mome' or 'vicuna_v1', got {template!r}")
    if IMAGE_TOKEN not in prompt:
        prompt = f"{IMAGE_TOKEN}\n{prompt}"
    before, after = prompt.split(IMAGE_TOKEN)
    return f"{SYSTEM} USER: {before}", f"{after} ASSISTANT:"


def instruction_text(prompt: str) -> str:
    """What the sentence encoder sees: the user's instruction without the image placeholder."""
    return prompt.replace(IMAGE_TOKEN, " ").strip()


@dataclass
class MoMEOutput:
    loss: torch.Tensor | None  # lm_loss (+ aux_loss)
    lm_loss: torch.Tensor | None
    aux_loss: torch.Tensor | None  # MoLE load balance, None when off
    logits: torch.Tensor  # (B, T, V)
    vision_weights: torch.Tensor  # (B, N) soft-router weights per encoder (ones for addition)
    vision_importance: torch.Tensor  # (B, N) mean |G_s(I)_i · f̂_i| (Fig. 4)
    language_experts: list[torch.Tensor] | None  # per layer (B, T) expert ids, None without MoLE
    attention_mask: torch.Tensor  # (B, T)


class MoME(nn.Module):
    """``MoME(config)`` builds the model; ``model(pixel_inputs, prompts, answers)`` returns `MoMEOutput` with the loss.

    ``pixel_inputs`` maps each encoder name in ``config.vision.use`` to what ``model.preprocess`` (or
    `MoME.preprocessors(config)`, usable without building the model) returned for the batch's images."""

    def __init__(self, config: MoMEConfig, tokenizer: Tokenizer | None = None):
        super().__init__()
        config.validate()
        self.config = config
        self.tokenizer = tokenizer or _load_tokenizer(config)
        lang = config.language
        if lang.path is None and self.tokenizer.vocab_size > lang.vocab_size:
            raise ValueError(f"language.vocab_size = {lang.vocab_size} is smaller than the tokenizer's "
                             f"{self.tokenizer.vocab_size} pieces")
        # Each random part gets its own seed, so changing one part's config leaves the others' weights unchanged.
        with torch.random.fork_rng(devices=[]):
            encoders = {}
            for i, (name, enc_cfg) in enumerate(config.encoders().items()):
                torch.manual_seed(config.seed * 1000 + 1 + i)
                encoders[name] = build_encoder(enc_cfg, lang.dtype)
            torch.manual_seed(config.seed * 1000 + 100)
            self.llm = _build_llm(config, self.tokenizer)
            if not lang.train:
                self.llm.requires_grad_(False)
            m = config.mole
            if m.router != "none":
                torch.manual_seed(config.seed * 1000 + 200)
                attach_mole(self.llm, config.num_experts, m.rank, m.router, instruction_dim=config.sentence.dim,
                            router_hidden=m.router_hidden, gate=m.gate, gumbel=m.gumbel, gumbel_tau=m.gumbel_tau,
                            load_balance=m.load_balance, router_grad=m.router_grad)
            torch.manual_seed(config.seed * 1000 + 300)
            self.move = MoVE(config.vision, encoders, self.llm.config.hidden_size, config.sentence.dim)
        self._sentence = None
        self._frozen: set[str] = set()  # trainable by the config, frozen by `freeze` (still saved)

    # ---- pieces ---------------------------------------------------------------------------------------------------

    @staticmethod
    def preprocessors(config: MoMEConfig) -> dict:
        """{encoder name: preprocess(list[PIL.Image]) -> dict[str, Tensor]} without building any model."""
        return {name: build_preprocessor(cfg) for name, cfg in config.encoders().items()}

    def preprocess(self, images) -> dict[str, dict[str, torch.Tensor]]:
        return {name: enc.preprocess(images) for name, enc in self.move.encoders.items()}

    @property
    def sentence_encoder(self):
        if self._sentence is None:
            from mome.model.sentence import SentenceEncoder

            self._sentence = SentenceEncoder(self.config.sentence.path, dim=self.config.sentence.dim)
        return self._sentence

    @property
    def needs_instruction(self) -> bool:
        return self.config.vision.router == "soft" or self.config.mole.router in ("instance", "instance_token")

    def instruction_embeddings(self, prompts: list[str]) -> torch.Tensor | None:
        """(B, dim) Sentence-BERT embeddings of the instructions (cached per text), or None if no router needs them."""
        if not self.needs_instruction:
            return None
        return self.sentence_encoder.encode([instruction_text(p) for p in prompts]).to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.move.projectors.parameters()).device

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.language.train:
            self.llm.train(False)  # a frozen LLM keeps its eval behaviour; MoLE's own switches still follow `mode`
            for m in mole_modules(self.llm):
                m.train(mode)
        return self

    # ---- text layout ------------------------------------------------------------------------------------------------

    def tokenize(self, prompts: list[str], answers: list[str] | None = None, padding_side: str = "right"):
        """Token ids around the L image slots. Returns input_ids, image_mask, labels, attention_mask (all (B, T))."""
        tk, L = self.tokenizer, self.move.num_output_tokens
        template = self.config.language.template
        rows = []
        for i, prompt in enumerate(prompts):
            before, after = build_prompt(prompt, template)
            ids = [tk.bos_id] + tk.encode(before)
            img = [False] * len(ids) + [True] * L
            ids += [tk.pad_id] * L
            if template == "mome":
                ids += tk.encode("</Img>")
            ids += tk.encode(after)
            img += [False] * (len(ids) - len(img))
            labels = [IGNORE] * len(ids)
            if answers is not None:
                ans = tk.encode(answers[i]) + [tk.eos_id]
                ids += ans
                img += [False] * len(ans)
                labels += ans
            n = self.config.language.max_length
            if len(ids) > n:  # keep the image whole: truncate the end
                if sum(img[:n]) != L:
                    raise ValueError(f"language.max_length = {n} cuts the image tokens of prompt {i}")
                ids, img, labels = ids[:n], img[:n], labels[:n]
            rows.append((ids, img, labels))
        T = max(len(r[0]) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, T), tk.pad_id, dtype=torch.long)
        image_mask = torch.zeros(B, T, dtype=torch.bool)
        labels = torch.full((B, T), IGNORE, dtype=torch.long)
        attention = torch.zeros(B, T, dtype=torch.long)
        for b, (ids, img, lab) in enumerate(rows):
            s = slice(0, len(ids)) if padding_side == "right" else slice(T - len(ids), T)
            input_ids[b, s] = torch.tensor(ids)
            image_mask[b, s] = torch.tensor(img)
            labels[b, s] = torch.tensor(lab)
            attention[b, s] = 1
        return input_ids, image_mask, labels, attention

    def embed(self, input_ids: torch.Tensor, image_mask: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the L image slots of each row replaced, in order, by that sample's visual tokens."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # (B, T, D)
        return embeds.masked_scatter(image_mask[..., None], visual.to(embeds.dtype))

    # ---- forward ------------------------------------------------------------------------------------------------------

    def forward(self, pixel_inputs: dict[str, dict[str, torch.Tensor]], prompts: list[str],
                answers: list[str] | None = None, instruction_embeddings: torch.Tensor | None = None) -> MoMEOutput:
        """Teacher-forced forward; with ``answers`` the loss covers the answer tokens (and EOS) only."""
        device = self.device
        if instruction_embeddings is None:
            instruction_embeddings = self.instruction_embeddings(prompts)
        if instruction_embeddings is not None:
            instruction_embeddings = instruction_embeddings.to(device)
        vis = self.move(pixel_inputs, instruction_embeddings)
        input_ids, image_mask, labels, attention = (t.to(device) for t in self.tokenize(prompts, answers))
        embeds = self.embed(input_ids, image_mask, vis.tokens)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with routing_context(self.llm, instruction_embeddings):
            logits = self.llm(inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                              use_cache=False).logits
        lm_loss = aux = loss = None
        if answers is not None:
            lm_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                      ignore_index=IGNORE)
            aux = mole_aux_loss(self.llm)
            loss = lm_loss if aux is None else lm_loss + aux
        moles = mole_modules(self.llm)
        experts = [m.last_expert for m in moles] if moles else None
        return MoMEOutput(loss, lm_loss, aux, logits, vis.weights, vis.importance, experts, attention)

    def generate(self, images, prompts: list[str], **kwargs):
        """See `mome.model.generate.generate`."""
        from mome.model.generate import generate

        return generate(self, images, prompts, **kwargs)

    # ---- stage 2 ------------------------------------------------------------------------------------------------------

    def replicate_adapter(self, num_experts: int | None = None, router: str = "instance") -> "MoME":
        """Stage 1 → stage 2 in place: the single adapter of every layer becomes K identical experts plus a fresh
        ``router`` (outputs unchanged at this moment); ``config.mole`` is updated to match."""
        m = self.config.mole
        if m.router != "single":
            raise ValueError(f"replicate_adapter needs a stage-1 model (mole.router = single), got {m.router!r}")
        K = num_experts or m.num_experts
        new = self.config.override({"mole.router": router, "mole.num_experts": K})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed * 1000 + 400)
            replicate_adapter(self.llm, K, router, instruction_dim=new.sentence.dim,
                              router_hidden=new.mole.router_hidden, gate=new.mole.gate, gumbel=new.mole.gumbel,
                              gumbel_tau=new.mole.gumbel_tau, load_balance=new.mole.load_balance,
                              router_grad=new.mole.router_grad)
        self.config = new
        return self

    def resize_experts(self, num_experts: int) -> "MoME":
        """A stage-2 model with K_s experts → K experts in place, by `mome.model.mole.resize_experts`'s rule (keep the
        first K, or add copies of experts j mod K_s with their router rows slightly perturbed)."""
        if self.config.mole.router in ("none", "single"):
            raise ValueError(f"resize_experts needs a stage-2 model (routed experts), got mole.router = "
                             f"{self.config.mole.router!r}")
        g = torch.Generator().manual_seed(self.config.seed * 1000 + 500)
        resize_experts(self.llm, num_experts, generator=g)
        self.config = self.config.override({"mole.num_experts": num_experts})
        return self

    def freeze(self, names: set[str]) -> "MoME":
        """Stop training the parameters ``names`` (``train.trainable``) while keeping them in `saved_state`, so the
        saved model and its checkpoints keep the layout of the model its config describes."""
        params = dict(self.named_parameters())
        unknown = sorted(set(names) - set(params))
        if unknown:
            raise KeyError(f"no such parameters: {unknown[:5]}")
        for n in names:
            params[n].requires_grad_(False)
        self._frozen = self._frozen | set(names)
        return self

    # ---- checkpoints --------------------------------------------------------------------------------------------------

    def saved_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds: trainable parameters plus every randomly initialised (path-less) base part."""
        keep = {n for n, p in self.named_parameters() if p.requires_grad} | self._frozen
        prefixes = [f"move.encoders.{name}." for name, cfg in self.config.encoders().items() if cfg.path is None]
        if self.config.language.path is None:
            prefixes.append("llm.")
        state = self.state_dict()
        return {k: v for k, v in state.items() if k in keep or any(k.startswith(p) for p in prefixes)}

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / "config.yaml")
        self.tokenizer.save(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.saved_state().items()}
        save_file(_untie(state), str(directory / "model.safetensors"), metadata={"format": CHECKPOINT_FORMAT})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, overrides: list[str] | dict | None = None,
                        device: str | torch.device = "cpu") -> "MoME":
        from safetensors import safe_open

        directory = Path(directory)
        for name in ("config.yaml", "model.safetensors"):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory} is not a MoME checkpoint: {name} is missing")
        config = MoMEConfig.load(directory / "config.yaml", overrides)
        tok_path = directory / "tokenizer.model"
        model = cls(config, Tokenizer.from_file(tok_path) if tok_path.is_file() else None)
        expected = model.saved_state()
        with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
            fmt = (f.metadata() or {}).get("format")
            if fmt != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{directory}/model.safetensors has format {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
            state = {k: f.get_tensor(k) for k in f.keys()}
        _check_state(expected, state, directory)
        model.load_state_dict(state, strict=False)
        return model.to(device).eval()  # like transformers' from_pretrained: ready for inference (ADT dropout off)


def load_official_state(model: "MoME", state: dict[str, torch.Tensor], source: str = "checkpoint") -> list[str]:
    """Load the authors' trainable tensors (``MoME_ckpt.pth``'s state dict, stage 2 or stage 1) into ``model`` in
    place. Every tensor the checkpoint holds is mapped (`mome.model.official`) or reported; every trainable tensor
    of the model must come from it, except the MoLE routers after a stage-1 → stage-2 replication (the release's rule:
    they stay freshly initialised). Returns the report lines. Raises `CheckpointError` naming what does not fit."""
    from mome.model.official import OfficialCheckpointError, official_to_mome

    ours = model.state_dict()
    try:
        mapped, notes = official_to_mome(state, ours, source=source)
    except OfficialCheckpointError as e:
        raise CheckpointError(str(e)) from None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    replicated = any(n.startswith("stage-1 checkpoint") for n in notes)
    missing = sorted(n for n in trainable - set(mapped) if not (replicated and ".mole.router." in n))
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} trainable tensors of this model: "
                              + ", ".join(missing[:6]) + (" …" if len(missing) > 6 else ""))
    dtypes = {n: t.to(ours[n].dtype) for n, t in mapped.items()}
    model.load_state_dict(dtypes, strict=False)
    return notes


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied embeddings): store each name as its own copy."""
    seen, out = set(), {}
    for k, v in state.items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def _check_state(expected: dict, state: dict, directory: Path) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    dtypes = [f"{k}: checkpoint {state[k].dtype} vs model {expected[k].dtype}"
              for k in sorted(set(expected) & set(state)) if state[k].dtype != expected[k].dtype]
    if missing or unexpected or shapes or dtypes:
        def show(items):
            return ", ".join(items[:6]) + (f", … ({len(items)} in all)" if len(items) > 6 else "")
        parts = []
        if missing:
            parts.append(f"missing tensors: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        if dtypes:
            parts.append(f"dtype mismatches: {show(dtypes)}")
        raise CheckpointError(f"checkpoint {directory} does not match its config: " + "; ".join(parts))


def _load_tokenizer(config: MoMEConfig) -> Tokenizer:
    lang = config.language
    if lang.tokenizer_path:
        return Tokenizer.from_file(lang.tokenizer_path)
    if lang.path:
        return Tokenizer.from_file(resolve_path(lang.path) / "tokenizer.model")
    return Tokenizer.tiny()


def _build_llm(config: MoMEConfig, tokenizer: Tokenizer) -> nn.Module:
    import transformers as tf

    lang = config.language
    dtype = _dtype(lang.dtype) if not lang.train else torch.float32
    if lang.path:
        return tf.AutoModelForCausalLM.from_pretrained(resolve_path(lang.path), local_files_only=True, dtype=dtype)
    llm_config = tf.LlamaConfig(
        vocab_size=lang.vocab_size, hidden_size=lang.hidden_size, intermediate_size=lang.intermediate_size,
        num_hidden_layers=lang.num_layers, num_attention_heads=lang.num_heads, num_key_value_heads=lang.num_heads,
        max_position_embeddings=lang.max_length, bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.pad_id, tie_word_embeddings=False,
    )
    return tf.LlamaForCausalLM(llm_config).to(dtype)
