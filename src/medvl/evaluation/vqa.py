"""Visual question answering as classification over the answer set (MEVF / the benchmarking paper).

A VQA record is one (image, question, answer) triple of a manifest with the columns of
:data:`VQA_COLUMNS` (see docs/DESIGN.md, "VQA records"). The image is encoded by the model's vision
tower and the question by its text tower (both joint-space embeddings, L2-normalised when
``normalize``), each standardised per dimension with the training questions' mean and standard
deviation (``standardize``: text towers trained on reports map short questions close together),
projected to a common width and fused as ``[v, q, v ⊙ q]``; an MLP classifies over the answers
seen in the training split (Do et al. 2021's classification head, without their decoder).
Answers are compared after :func:`normalize_answer`. A test answer outside the answer set counts
as wrong (reported as ``n_unseen_answers``).

* ``frozen``: the encoders' embeddings are computed once and only the head is trained.
* ``finetune``: a medvl model's towers train together with the head (``encoder_lr``).

Accuracy is reported overall, for ``closed`` (yes/no and other fixed-choice) and ``open``
questions, and per ``question_type``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VQA_COLUMNS",
    "VQAFusionHead",
    "VQASet",
    "normalize_answer",
    "train_vqa_head",
    "vqa_accuracy",
]

#: Manifest columns of a VQA record: the question, its answer, ``open``/``closed`` and a free type.
VQA_COLUMNS = ("question", "answer", "answer_type", "question_type")


def normalize_answer(answer: Any) -> str:
    """Lower case, surrounding whitespace and a final period removed, inner whitespace collapsed."""
    text = re.sub(r"\s+", " ", str(answer).strip().lower())
    return text[:-1].rstrip() if text.endswith(".") else text


@dataclass
class VQASet:
    """Per-question inputs of the VQA head: image (N, D) and question (N, D) embeddings and targets."""

    image: np.ndarray
    question: np.ndarray
    answers: list[str]
    answer_types: list[str]
    question_types: list[str]
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.answers)
        if self.image.shape[0] != n or self.question.shape[0] != n:
            raise ValueError(f"VQASet: {self.image.shape[0]} image rows, {self.question.shape[0]} question rows, "
                             f"{n} answers")
        for name in ("image", "question"):
            if not np.isfinite(getattr(self, name)).all():
                bad = np.flatnonzero(~np.isfinite(getattr(self, name)).all(axis=1))[:5]
                shown = [self.ids[i] for i in bad] if self.ids else bad.tolist()
                raise ValueError(f"VQASet: non-finite {name} embeddings for records {shown}")


class VQAFusionHead(nn.Module):
    """Project image (d_v) and question (d_q) embeddings to ``hidden_dim`` (``v``, ``q``), then
    ``MLP([v, q, v ⊙ q])`` → answer logits (B, n_answers)."""

    def __init__(self, image_dim: int, question_dim: int, n_answers: int, hidden_dim: int = 256,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.image = nn.Linear(image_dim, hidden_dim)
        self.question = nn.Linear(question_dim, hidden_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(3 * hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(hidden_dim, n_answers))

        self.image_scaler: nn.Module = nn.Identity()
        self.question_scaler: nn.Module = nn.Identity()

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        v, q = self.image(image), self.question(question)
        return self.mlp(torch.cat([v, q, v * q], dim=-1))

    def classify(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """Logits of (L2-normalised) embeddings after the training-set standardisation."""
        return self(self.image_scaler(image), self.question_scaler(question))


def answer_vocabulary(answers: Sequence[str]) -> list[str]:
    """The sorted distinct answers (the classes of the head)."""
    return sorted(set(answers))


def _prepare(x: np.ndarray | torch.Tensor, normalize: bool) -> torch.Tensor:
    t = x.float() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return F.normalize(t, dim=-1) if normalize else t


class _Standardizer(nn.Module):
    """Per-dimension ``(x − mean) / std`` with statistics of the training rows (std floored at 1e-6)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, train: torch.Tensor, enabled: bool) -> None:
        super().__init__()
        mean = train.mean(dim=0) if enabled else torch.zeros(train.shape[1])
        std = train.std(dim=0).clamp(min=1e-6) if enabled and train.shape[0] > 1 else torch.ones(train.shape[1])
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def train_vqa_head(
    train: VQASet,
    vocabulary: Sequence[str],
    *,
    hidden_dim: int = 256,
    dropout: float = 0.1,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    normalize: bool = True,
    standardize: bool = True,
    seed: int = 0,
    encode: Callable[[Sequence[int]], tuple[torch.Tensor, torch.Tensor]] | None = None,
    extra_parameters: Sequence[nn.Parameter] = (),
    extra_lr: float = 1e-5,
) -> VQAFusionHead:
    """Train the fusion head with cross-entropy on answer indices (AdamW, seeded shuffling).

    ``encode(rows) -> (image, question)`` replaces the fixed embeddings of ``train`` (fine-tuning:
    it runs the towers with gradients and ``extra_parameters`` are optimised at ``extra_lr``).
    Records whose answer is not in ``vocabulary`` are left out of training.
    """
    index = {a: i for i, a in enumerate(vocabulary)}
    rows = np.asarray([i for i, a in enumerate(train.answers) if a in index], dtype=np.int64)
    if rows.size == 0:
        raise ValueError("no training question has an answer in the answer set")
    targets = torch.as_tensor([index[train.answers[i]] for i in rows], dtype=torch.long)
    torch.manual_seed(seed)
    image_all = _prepare(train.image, normalize)
    question_all = _prepare(train.question, normalize)
    head = VQAFusionHead(train.image.shape[1], train.question.shape[1], len(vocabulary), hidden_dim, dropout)
    head.image_scaler = _Standardizer(image_all[rows], standardize)
    head.question_scaler = _Standardizer(question_all[rows], standardize)
    groups: list[dict[str, Any]] = [{"params": list(head.parameters()), "lr": lr}]
    if extra_parameters:
        groups.append({"params": list(extra_parameters), "lr": extra_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(rows), generator=gen)
        for start in range(0, len(rows), batch_size):
            pick = order[start : start + batch_size]
            if encode is not None:
                img, qst = encode(rows[pick.numpy()].tolist())
                img, qst = _prepare(img, normalize), _prepare(qst, normalize)
            else:
                img, qst = image_all[rows[pick.numpy()]], question_all[rows[pick.numpy()]]
            loss = F.cross_entropy(head.classify(img, qst), targets[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    head.eval()
    return head


@torch.no_grad()
def predict_answers(head: VQAFusionHead, data: VQASet, vocabulary: Sequence[str], normalize: bool = True) -> list[str]:
    """The head's answer for every question of ``data``."""
    logits = head.classify(_prepare(data.image, normalize), _prepare(data.question, normalize))
    return [vocabulary[i] for i in logits.argmax(dim=-1).tolist()]


def vqa_accuracy(
    predicted: Sequence[str], truth: Sequence[str], answer_types: Sequence[str], question_types: Sequence[str]
) -> dict[str, float]:
    """``accuracy`` (overall), ``accuracy_open``, ``accuracy_closed``, ``accuracy/<question_type>``
    and the counts ``n``, ``n_open``, ``n_closed`` (exact match of normalised answers)."""
    correct = np.asarray([normalize_answer(p) == normalize_answer(t) for p, t in zip(predicted, truth, strict=True)])
    kinds = np.asarray([str(a).lower() for a in answer_types])
    out: dict[str, float] = {"accuracy": float(correct.mean()) if correct.size else float("nan"),
                             "n": float(correct.size)}
    for kind in ("open", "closed"):
        sel = kinds == kind
        out[f"accuracy_{kind}"] = float(correct[sel].mean()) if sel.any() else float("nan")
        out[f"n_{kind}"] = float(sel.sum())
    qtypes = np.asarray([str(q) for q in question_types])
    for qt in sorted(set(qtypes.tolist()) - {""}):
        out[f"accuracy/{qt}"] = float(correct[qtypes == qt].mean())
    return out


# ------------------------------------------------------------------------------------- glue
def check_vqa_manifest(manifest: Any, source: str) -> None:
    """Every column of :data:`VQA_COLUMNS` present and every question/answer non-empty, or an error naming them."""
    from medvl.data.manifest import ManifestError

    df = manifest.records
    missing = [c for c in VQA_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{source}: not a VQA manifest; missing column(s) {missing} (a VQA record has "
                            f"{list(VQA_COLUMNS)}; see `medvl data vqa-synth` and the VQA importers)")
    for column in ("question", "answer"):
        blank = df[column].isna() | (df[column].astype(str).str.strip() == "")
        if blank.any():
            ids = df.loc[blank, "id"].astype(str).tolist()[:5]
            raise ManifestError(f"{source}: empty {column} in record(s) {ids}")


def build_vqa_set(encoder: Any, manifest: Any, data_cfg: Any, *, batch_size: int,
                  progress: bool = False) -> tuple[VQASet, dict[str, Any]]:
    """Embed each distinct image once and each distinct question once; one row per VQA record.

    ``encoder`` is any model of :func:`medvl.models.loading.load_model` (images reach it with its
    own preprocessing). Records whose image fails to load under ``on_bad_sample: skip`` are left
    out and counted.
    """
    from medvl.evaluation.extraction import evaluation_dataset, extract_embeddings

    df = manifest.records
    first = ~df["image"].astype(str).duplicated()
    no_tasks = data_cfg.model_copy(update={"tasks": []})
    images = evaluation_dataset(encoder, manifest.subset(first.to_numpy()), no_tasks)
    emb = extract_embeddings(encoder, images, batch_size=batch_size, progress=progress, tasks=[])
    row_of_id = {rid: k for k, rid in enumerate(emb.image_ids)}
    image_row = dict(zip(df.loc[first, "image"].astype(str), df.loc[first, "id"].astype(str), strict=True))
    rows = [row_of_id.get(image_row[str(p)], -1) for p in df["image"].astype(str)]
    keep = np.asarray([r >= 0 for r in rows])
    questions = df["question"].astype(str).tolist()
    unique = list(dict.fromkeys(q for q, k in zip(questions, keep, strict=True) if k))
    parts = [encoder.encode_texts(unique[i : i + batch_size])[0].detach().float().cpu().numpy()
             for i in range(0, len(unique), batch_size)]
    q_emb = np.concatenate(parts) if parts else np.zeros((0, emb.image_emb.shape[1]), np.float32)
    q_row = {q: i for i, q in enumerate(unique)}
    sel = np.flatnonzero(keep)
    data = VQASet(
        image=emb.image_emb[np.asarray(rows)[sel]],
        question=q_emb[[q_row[questions[i]] for i in sel]],
        answers=[normalize_answer(a) for a in df["answer"].to_numpy()[sel]],
        answer_types=[str(a).lower() for a in df["answer_type"].to_numpy()[sel]],
        question_types=[str(q) for q in df["question_type"].fillna("").to_numpy()[sel]],
        ids=df["id"].astype(str).to_numpy()[sel].tolist(),
    )
    return data, {"n_records": len(df), "n_skipped": int((~keep).sum()), "n_images": len(emb.image_ids),
                  "n_questions": len(unique)}


def run_vqa(encoder: Any, manifest: Any, data_cfg: Any, options: Any, *, split: str, batch_size: int,
            progress: bool = False, source: str = "manifest") -> dict[str, Any]:
    """Train the head on ``options.train_split`` and report accuracy on ``split`` (``{"metrics", "options", "info"}``)."""
    import copy

    from medvl.data.dataset import collate, select_split
    from medvl.data.manifest import ManifestError
    from medvl.evaluation.extraction import evaluation_dataset
    from medvl.models.loading.medvl import MedvlModel

    check_vqa_manifest(manifest, source)
    parts = {}
    for name, part in (("train", options.train_split), ("eval", split)):
        subset = select_split(manifest, data_cfg.model_copy(update={"fold": None}), part)  # type: ignore[arg-type]
        if len(subset) == 0:
            raise ManifestError(f"{source}: the {part!r} split has no VQA records")
        parts[name] = subset
    train, train_info = build_vqa_set(encoder, parts["train"], data_cfg, batch_size=batch_size, progress=progress)
    vocabulary = answer_vocabulary(train.answers)
    kw = {"hidden_dim": options.hidden_dim, "dropout": options.dropout, "epochs": options.epochs,
          "batch_size": options.batch_size, "lr": options.lr, "weight_decay": options.weight_decay,
          "normalize": options.normalize, "standardize": options.standardize, "seed": options.seed}
    eval_encoder = encoder
    if options.mode == "frozen":
        head = train_vqa_head(train, vocabulary, **kw)
    else:
        model = getattr(encoder, "model", None)
        if model is None or not hasattr(model, "encode_image"):
            raise ValueError("vqa.mode=finetune needs a medvl model (--checkpoint); this model can only be frozen")
        model = copy.deepcopy(model).train()
        records = evaluation_dataset(encoder, parts["train"], data_cfg.model_copy(update={"tasks": []}))
        position = {rid: i for i, rid in enumerate(records.ids)}
        questions = parts["train"].records["question"].astype(str).tolist()

        def encode(rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
            batch = collate([records[position[train.ids[r]]] for r in rows])
            inputs = {k: v.to(model.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            texts = [questions[position[train.ids[r]]] for r in rows]
            return model.encode_image(inputs), model.encode_text(texts)

        params = [p for p in model.parameters() if p.requires_grad]
        head = train_vqa_head(train, vocabulary, encode=encode, extra_parameters=params,
                              extra_lr=options.encoder_lr, **kw)
        eval_encoder = MedvlModel(model.eval(), dict(encoder.identity, vqa_finetuned=True))
    test, test_info = build_vqa_set(eval_encoder, parts["eval"], data_cfg, batch_size=batch_size, progress=progress)
    predicted = predict_answers(head, test, vocabulary, options.normalize)
    metrics = vqa_accuracy(predicted, test.answers, test.answer_types, test.question_types)
    metrics["n_unseen_answers"] = float(sum(a not in set(vocabulary) for a in test.answers))
    info = {"train": train_info, "eval": test_info, "n_answers": len(vocabulary), "source": source,
            "examples": [{"id": i, "answer": a, "predicted": p}
                         for i, a, p in list(zip(test.ids, test.answers, predicted, strict=True))[:10]]}
    return {"metrics": metrics, "options": options.model_dump(mode="json"), "info": info}
