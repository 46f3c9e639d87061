#!/usr/bin/env python3
"""Generates the tokenizer test corpus: tests/data/tokenizer_corpus/corpus.jsonl.gz.

One JSON string per line. The generator is deterministic (fixed seed, gzip without a
timestamp), so re-running it reproduces the committed file byte for byte. It mixes
natural-language text in many scripts, code, markup, numbers, whitespace oddities, emoji
sequences, special-token strings embedded in text and very long words; hand-written
hostile cases live next to it in hostile.jsonl. Expected ids are NOT stored: the comparison
script computes them with Hugging Face `tokenizers` at test time.

    .venv/bin/python tests/tokenizer/make_corpus.py            # rewrite the corpus
    .venv/bin/python tests/tokenizer/make_corpus.py --check    # verify it is up to date
"""
import argparse
import gzip
import io
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "tokenizer_corpus", "corpus.jsonl.gz")

ENGLISH_WORDS = """the of and to in is was for that on with as by at from his her it be are this an
which or have one had not but what all were when we there can been has more if no out do so
time only new some could these two may first then any like my now over such our man me even
most made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own see
men work long get here between both life being under never day same another know while last
might us great old year off come since against go came right used take three model token
tokenizer expert router mixture inference kernel latency throughput batch sequence memory
GPU CPU server request response stream stop sampling temperature don't can't won't it's
I'm you're they've we'll she'd he's isn't aren't wasn't THE DON'T HE'S IT'LL WE'VE""".split()

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She said, \"I'll be there at 5 o'clock,\" and left.",
    "It's a truth universally acknowledged that a model in possession of many experts must be routed.",
    "We've measured 1,234.56 tokens/s on an H100 (80 GB) -- that's 2.3x faster!",
    "Don't panic; they're just tokens.",
    "E = mc^2, a^2 + b^2 = c^2, and 3 < 4 > 2 <= 5 >= 1 != 0.",
    "Mr. O'Neil's dog's bone isn't John's.",
    "Hello,world!How are-you?I'm fine...thanks!!!",
    "The year 2024 had 366 days; 1999 had 365.",
    "Email me at john.doe+tokens@example.com or call +1 (555) 010-9999.",
]

SCRIPTS = {
    "zh": ["你好，世界！", "混合专家模型的推理速度很快。", "今天天气很好，我们去公园散步吧。",
           "机器学习和深度学习是人工智能的重要分支。", "这是一个测试：标点符号、数字123和English混合。"],
    "ja": ["こんにちは、世界！", "東京は日本の首都です。", "カタカナとひらがなと漢字が混ざった文章。",
           "私はトークナイザーをテストしています。", "ｶﾀｶﾅ半角もあります。"],
    "ko": ["안녕하세요, 세계!", "한국어 문장을 토큰화합니다.", "전문가 혼합 모델은 빠릅니다."],
    "ar": ["مرحبا بالعالم!", "اللغة العربية جميلة جداً.", "هذا اختبار للمحلل اللغوي ١٢٣٤٥.",
           "السَّلَامُ عَلَيْكُمْ"],
    "he": ["שלום עולם!", "זהו מבחן של מחלק המילים."],
    "hi": ["नमस्ते दुनिया!", "यह एक परीक्षण वाक्य है।", "हिन्दी में अंक १२३४५ भी होते हैं।",
           "क्षत्रिय ज्ञान श्री"],
    "th": ["สวัสดีชาวโลก", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ", "ทดสอบตัวตัดคำภาษาไทย ๑๒๓"],
    "ru": ["Привет, мир!", "Съешь же ещё этих мягких французских булок, да выпей чаю.",
           "ЁЖИК В ТУМАНЕ"],
    "el": ["Γειά σου Κόσμε!", "ΟΔΥΣΣΕΥΣ ὀδυσσεύς"],
    "vi": ["Tiếng Việt có rất nhiều dấu.", "Xin chào thế giới!"],
    "ta": ["வணக்கம் உலகம்"],
    "bn": ["হ্যালো বিশ্ব"],
    "am": ["ሰላም ልዑል"],
    "hy": ["Բարեւ աշխարհ"],
    "ka": ["გამარჯობა მსოფლიო"],
    "de": ["Größenwahnsinnige Straßenbahnfahrerinnen übernehmen Verantwortung.",
           "Donaudampfschifffahrtsgesellschaftskapitänsmütze"],
    "fr": ["L'été dernier, j'ai mangé des crêpes à Noël.", "Ça c'est très français, n'est-ce pas ?"],
    "es": ["¿Dónde está la biblioteca? ¡Allí!", "El niño comió piñata."],
    "tr": ["İstanbul'da ılık bir gün.", "IĞDIR ŞİŞLİ"],
}

EMOJI = ["😀", "🚀", "🔥", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵", "❤️", "1️⃣", "#️⃣", "🧑🏿‍💻",
         "👩‍❤️‍💋‍👨", "🤷‍♀️", "🐈‍⬛", "✋🏻", "🫠", "☺️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "⚡", "©", "™"]

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
            "<|fim_prefix|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_5|>",
            "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
            "<｜tool▁calls▁begin｜>", "<|EOT|>", "<|im_start", "im_end|>", "<|", "|>", "<<s>>",
            "< s>", "<|im_start|><|im_end|>"]

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }\r\n",
    "const x = await fetch(`https://api.example.com/v1/items?id=${id}&limit=10`);\n",
    "fn main() {\n    let s: &str = \"hello\";\n    println!(\"{s} {}\", 42_u64);\n}\n",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name HAVING COUNT(*) > 1;",
    "if (x != null && y !== undefined) { return x ?? y; }",
    "  \t  mixed_indent = True  # comment with trailing spaces   \n",
    "lambda x: x**2 if x>0 else -x//3 % 7",
    "$ ls -la /usr/local/bin | grep -E '^[dl]' > out.txt 2>&1",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "x = {'a': [1, 2.5e-3, None], \"b\": {\"c\": True}}",
]

MARKUP = [
    "# Title\n\n## Subtitle\n\n- item one\n- item two\n  - nested\n\n1. first\n2. second\n",
    "| col1 | col2 |\n|------|------|\n| a    | b    |\n",
    "```python\nprint('hi')\n```\n",
    "**bold** _italic_ `code` [link](http://example.com) ![img](a.png)",
    "> quote\n>> nested quote\n\n---\n",
    '{"name": "moeopt", "version": "0.1.0", "tags": ["moe", "gpu"], "nested": {"k": null}}',
    '[{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello\\n"}]',
]

URLS = ["https://www.example.com/path/to/page?query=1&b=two#frag",
        "http://localhost:8000/v1/chat/completions", "ftp://files.example.org/pub/file.tar.gz",
        "https://ja.wikipedia.org/wiki/日本語", "mailto:someone@example.com",
        "/home/user/.config/moeopt/config.yaml", "C:\\Users\\Admin\\Documents\\file.txt"]

WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\n\r\n", " \n ",
              "\u00a0", "\u2003", "\u3000", "\u200b", "\u2028", "\u0085", "\u180e", "\u202f",
              "\u2009", " \t \n", "\f", "\v"]

COMBINING = ["e\u0301", "a\u0308", "n\u0303", "A\u030a", "o\u0302\u0323", "Z\u0351\u0364\u0350\u0346",
             "\u1100\u1161\u11a8", "\u0915\u094d\u0937", "i\u0307", "\u212b", "\uf900", "\u0344"]

NUMBERS = ["0", "7", "42", "123", "1234", "12345", "1234567890", "3.14159265358979",
           "1,000,000", "-273.15", "6.022e23", "0x1F", "0b1010", "١٢٣٤٥", "१२३", "１２３",
           "²³¹", "½", "Ⅻ", "০১২", "๑๒๓"]


def rand_digits(rng, n):
    return "".join(rng.choice("0123456789") for _ in range(n))


def random_codepoint_text(rng, n):
    # Characters from blocks assigned long ago (Unicode <= 6): stable across the Unicode
    # versions of the reference and of PCRE2/utf8proc.
    blocks = [(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff),
              (0x600, 0x6ff), (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x206f),
              (0x2100, 0x214f), (0x2190, 0x21ff), (0x2200, 0x22ff), (0x2500, 0x257f),
              (0x3000, 0x303f), (0x3040, 0x30ff), (0x4e00, 0x9fa5), (0xac00, 0xd7a3),
              (0xff00, 0xffef), (0x1f300, 0x1f5ff), (0x1d400, 0x1d7ff)]
    out = []
    while len(out) < n:
        lo, hi = rng.choice(blocks)
        c = chr(rng.randint(lo, hi))
        cat = unicodedata.category(c)
        if cat in ("Cn", "Cs", "Co"):
            continue
        out.append(c)
    return "".join(out)


def english(rng, n):
    words = [rng.choice(ENGLISH_WORDS) for _ in range(n)]
    s = " ".join(words)
    if rng.random() < 0.5:
        s = s[0].upper() + s[1:]
    return s + rng.choice([".", "!", "?", "", "...", ":", ";", ",", " "])


def generators(rng):
    script_names = sorted(SCRIPTS)

    def g_english():
        return english(rng, rng.randint(1, 40))

    def g_sentence():
        return rng.choice(SENTENCES)

    def g_script():
        lang = rng.choice(script_names)
        parts = [rng.choice(SCRIPTS[lang]) for _ in range(rng.randint(1, 3))]
        return rng.choice([" ", "", "\n"]).join(parts)

    def g_mixed():
        parts = []
        for _ in range(rng.randint(2, 6)):
            k = rng.random()
            if k < 0.3:
                parts.append(english(rng, rng.randint(1, 6)))
            elif k < 0.6:
                parts.append(rng.choice(SCRIPTS[rng.choice(script_names)]))
            elif k < 0.75:
                parts.append(rng.choice(EMOJI) * rng.randint(1, 3))
            elif k < 0.9:
                parts.append(rng.choice(NUMBERS))
            else:
                parts.append(rng.choice(URLS))
        return rng.choice(["", " ", "  ", "\n", "\t"]).join(parts)

    def g_code():
        s = rng.choice(CODE)
        if rng.random() < 0.3:
            s = s.replace("\n", "\r\n")
        if rng.random() < 0.3:
            s = s.replace("    ", "\t")
        return s * rng.randint(1, 3)

    def g_markup():
        return rng.choice(MARKUP)

    def g_url():
        return rng.choice(["see ", "", "URL: ", "("]) + rng.choice(URLS) + rng.choice(["", ")", ".", " ok"])

    def g_whitespace():
        parts = []
        for _ in range(rng.randint(1, 8)):
            parts.append(rng.choice(WHITESPACE) * rng.randint(1, 5))
            if rng.random() < 0.6:
                parts.append(rng.choice(ENGLISH_WORDS + ["x", "1", "中", "!"]))
        return "".join(parts)

    def g_numbers():
        k = rng.random()
        if k < 0.3:
            return rand_digits(rng, rng.randint(1, 60))
        if k < 0.5:
            return f"{rng.randint(0, 10**9):,}"
        if k < 0.7:
            return " ".join(rng.choice(NUMBERS) for _ in range(rng.randint(1, 8)))
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f} and {rand_digits(rng, rng.randint(5, 25))}"

    def g_special():
        parts = []
        for _ in range(rng.randint(1, 6)):
            parts.append(rng.choice(SPECIALS))
            parts.append(rng.choice(["", " ", "\n", "hello", " world ", "user\n", "中文", "  "]))
        return "".join(parts)

    def g_long_word():
        k = rng.random()
        if k < 0.25:
            return rng.choice("abcxyzAE") * rng.randint(50, 2000)
        if k < 0.5:
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(30, 800)))
        if k < 0.65:
            return rng.choice(["super", "califragilistic", "ab", "ing"]) * rng.randint(10, 200)
        if k < 0.8:
            return rng.choice("!-=*#~_.") * rng.randint(20, 500)
        if k < 0.9:
            return rng.choice(["中", "ก", "ا", "한", "é"]) * rng.randint(20, 400)
        return rng.choice(WHITESPACE) * rng.randint(50, 1000)

    def g_contractions():
        subj = rng.choice(["I", "you", "he", "she", "it", "we", "they", "John", "IT", "Y'all"])
        suf = rng.choice(["'s", "'ll", "'re", "'ve", "'m", "'d", "'t", "'S", "'LL", "'Re", "’s", "'x"])
        return f"{subj}{suf} {rng.choice(ENGLISH_WORDS)}{rng.choice(['', ' ', '.'])}"

    def g_combining():
        base = rng.choice(COMBINING)
        return "".join(rng.choice([base, rng.choice(ENGLISH_WORDS), " "]) for _ in range(rng.randint(1, 6)))

    def g_emoji():
        return "".join(rng.choice(EMOJI + [" ", "a", "!", "\u200d", "\ufe0f"]) for _ in range(rng.randint(1, 12)))

    def g_random_unicode():
        return random_codepoint_text(rng, rng.randint(1, 60))

    def g_json():
        obj = {rng.choice(ENGLISH_WORDS): rng.choice([rng.randint(-999, 999), english(rng, 3), None, True,
                                                     [1, 2, 3], {"k": "v"}])
               for _ in range(rng.randint(1, 5))}
        return json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2, "\t"]))

    return [
        (g_english, 14), (g_sentence, 3), (g_script, 12), (g_mixed, 10), (g_code, 8), (g_markup, 3),
        (g_url, 3), (g_whitespace, 8), (g_numbers, 7), (g_special, 7), (g_long_word, 4),
        (g_contractions, 5), (g_combining, 4), (g_emoji, 5), (g_random_unicode, 6), (g_json, 3),
    ]


def build(n):
    rng = random.Random(20241126)
    gens = generators(rng)
    funcs = [g for g, _ in gens]
    weights = [w for _, w in gens]
    out = []
    for _ in range(n):
        out.append(rng.choices(funcs, weights)[0]())
    return out


def serialize(lines):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for s in lines:
            gz.write((json.dumps(s, ensure_ascii=False) + "\n").encode("utf-8"))
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=6000)
    ap.add_argument("--check", action="store_true", help="fail if the committed corpus differs")
    args = ap.parse_args()
    data = serialize(build(args.count))
    if args.check:
        with open(OUT, "rb") as f:
            same = f.read() == data
        print("corpus up to date" if same else "corpus differs from the generator output")
        return 0 if same else 1
    with open(OUT, "wb") as f:
        f.write(data)
    print(f"wrote {args.count} strings to {os.path.normpath(OUT)} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
