"""Makes a tiny random-weight BERT encoder in sentence-transformers layout for the tests:
config.json and model.safetensors (transformers' BertModel), a WordPiece tokenizer that pads
and truncates as all-MiniLM-L6-v2's does, and the pooling modules."""

from __future__ import annotations

import json
from pathlib import Path

from tiny_model import CORPUS

EXTRA = ["Über Café naïve façade", "数据 模型 浏览器", "Привет мир", "emoji 🙂 and tabs\tend"]


def make_tokenizer(folder: Path, vocab_size: int, max_length: int) -> int:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
    tok.train_from_iterator(CORPUS + EXTRA, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    # As all-MiniLM-L6-v2's tokenizer.json: every input padded and cut to a fixed length.
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=max_length)
    tok.enable_truncation(max_length=max_length)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "do_lower_case": True,
        "tokenizer_class": "BertTokenizer",
        "model_max_length": 512,
        **dict(
            zip(
                ["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"],
                specials,
                strict=True,
            )
        ),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return tok.get_vocab_size()


def make_bert(
    folder: Path,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    intermediate: int = 128,
    positions: int = 64,
    max_length: int = 48,
    pooling: str = "mean",
) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = make_tokenizer(folder, 300, 16)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    with torch.no_grad():  # larger than the init's 0.02 so every layer matters
        for p in model.parameters():
            p.normal_(0, 0.2 if p.dim() > 1 else 0.1)
    model.save_pretrained(folder, safe_serialization=True)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            }
        )
    )
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False})
    )
    return folder
