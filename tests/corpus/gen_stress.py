#!/usr/bin/env python3
"""Writes a deterministic stress text for the tokenizer tests (default 1.2 MB): a random mix
of words in many scripts, CJK runs, emoji sequences, digit runs, whitespace runs (spaces, tabs,
CR/LF, NBSP, ideographic space, line separators), contractions in both cases, punctuation
clusters, combining marks and symbols. Only code points assigned since Unicode 6 are used, so
Unicode-version differences between libraries do not matter.

    python gen_stress.py OUT [--bytes N] [--seed S]
"""
import argparse
import random

WORDS = ["the", "of", "and", "token", "sequence", "attention", "longseq", "Llama", "RoPE",
         "daß", "naïve", "café", "Ωμέγα", "слово", "قطة", "שלום", "नमस्ते", "ภาษา", "한국어",
         "日本語", "中文", "テスト", "ひらがな", "x86_64", "C++", "e.g.", "U.S.A.", "don't",
         "I'M", "we'll", "they've", "it's", "O'Neill", "rock'n'roll", "'tis", "ma'am"]
RANGES = [(0x4E00, 0x9FA5), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xAC00, 0xD7A3),
          (0x0410, 0x044F), (0x0391, 0x03A1), (0x03A3, 0x03C9), (0x0621, 0x063A),
          (0x0905, 0x0939), (0x0E01, 0x0E30), (0x00C0, 0x00FF), (0x0100, 0x017F),
          (0x2200, 0x22FF), (0x2190, 0x21FF), (0x2500, 0x257F), (0x1F600, 0x1F64F),
          (0x1F300, 0x1F3F0), (0x2600, 0x2613), (0xFF01, 0xFF5E)]
SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ", "\u00a0",
          "\u3000", "\u2028", "\u2009", "\u200b", "\x0b", "\x0c", "\u0085"]
PUNCT = ["...", "!", "?!", "--", "—", "(", ")", "[", "]", "{", "}", "\"", "'", "«»", "„“",
         "#", "@", "$", "%", "&", "*", "/", "\\", "|", "~", "`", "^", "_", ";", ":", ",", ".",
         "<|", "|>", "<<", ">>", "=>", "->", "!=", "==", "+=", "**"]
EMOJI = ["👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "❤️", "1️⃣", "🧑‍🔬", "😂", "🔥", "🚀"]
COMBINING = ["e\u0301", "a\u0308", "o\u0303\u0304", "n\u0303", "Z\u0337\u0322"]
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M",
                "'LL", "'D", "'x", "''"]


def piece(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.30:
        return rng.choice(WORDS)
    if r < 0.45:
        lo, hi = rng.choice(RANGES)
        return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8)))
    if r < 0.55:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 25)))
    if r < 0.70:
        return rng.choice(SPACES)
    if r < 0.80:
        return rng.choice(PUNCT) * rng.randint(1, 3)
    if r < 0.86:
        return rng.choice(CONTRACTIONS)
    if r < 0.92:
        return rng.choice(EMOJI)
    if r < 0.96:
        return rng.choice(COMBINING)
    return "".join(chr(rng.randint(0x21, 0x7E)) for _ in range(rng.randint(1, 12)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--bytes", type=int, default=1_200_000)
    ap.add_argument("--seed", type=int, default=20261125)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    parts, size = [], 0
    while size < a.bytes:
        p = piece(rng)
        parts.append(p)
        size += len(p.encode("utf-8"))
    with open(a.out, "w", encoding="utf-8", newline="") as f:
        f.write("".join(parts))


if __name__ == "__main__":
    main()
