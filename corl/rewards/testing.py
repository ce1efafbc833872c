"""Tiny reward backbones for tests, built from configs (no downloads): a BERT for BERTScore and a BLIP
captioner, saved with save_pretrained so they load exactly like a hub id would."""

from __future__ import annotations

from pathlib import Path

import torch

# Words the tiny tokenizers know (BERT-style vocab: special tokens first).
TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "an", "the", "red", "blue", "green", "yellow", "circle",
    "circles", "square", "squares", "triangle", "triangles", "two", "three", "one", "of", "to", "left", "right",
    "above", "below", "photo", "picture", "dog", "cat", "on", "in", "and", "is", ".", ",", "sat", "mat", "big",
    "small",
]


def write_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n")
    return path


def save_tiny_bert(folder: Path, num_layers: int = 3, seed: int = 0) -> Path:
    """A random BERT (width 32, `num_layers` layers) + tokenizer in `folder`."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(seed)
    tokenizer = BertTokenizer(str(write_vocab(folder)))
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=num_layers,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A random BLIP captioner (one-layer text and vision towers, 32 px images) + processor in `folder`."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil, BlipProcessor

    torch.manual_seed(seed)
    tokenizer = BertTokenizer(str(write_vocab(folder)))
    text = {"vocab_size": len(TINY_VOCAB), "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 37, "max_position_embeddings": 64, "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id, "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
              "image_size": 32, "patch_size": 8}
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=16))
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
