"""A fixed corpus of strings that tokenizers tend to get wrong: many scripts, emoji sequences,
code, whitespace runs, numbers, punctuation and special tokens inside text.

`CORPUS` is hand-picked cases followed by strings generated with a fixed seed, so every run
(and every machine) checks the same strings.
"""

from __future__ import annotations

import random

SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>"]

HAND_PICKED = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t",
    "\r\n",
    " \n ",
    "a",
    " a",
    "a ",
    "  leading spaces",
    "trailing spaces   ",
    "   both   ",
    "tabs\tin\t\tbetween\t",
    "windows\r\nline\r\nendings\r\n",
    "mixed \t \n \r\n  whitespace \n\n\n end",
    "Hello, world!",
    "Hello world",
    "hello   world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure it's what they've said we'd do, isn't it? You're right; they'll know.",
    "ALL CAPS SENTENCE AND MiXeD CaSe",
    "0",
    "7",
    "42",
    "1234567890",
    "3.14159265358979323846264338327950288419716939937510",
    "-273.15 °C and +1e-10 and 6.022e23",
    "1,000,000 and 1.000.000 and 1 000 000",
    "phone: +1 (555) 123-4567, ISBN 978-3-16-148410-0",
    "2024-01-31T23:59:59Z",
    "v1.2.3-rc.4+build.567",
    "0xDEADBEEF 0b1010 0o777 1_000_000",
    "numerals: ٠١٢٣٤٥٦٧٨٩ ۴۵ १२३ ১২৩ １２３ Ⅻ ⅷ 〇 𝟙𝟚 ①② ¼ ¹",
    "12345678901234567890123456789012345678901234567890",
    "!@#$%^&*()_+-=[]{}|;':\",./<>?`~",
    "...!!!???---___===+++***",
    "«quotes» „Anführungszeichen“ “curly” ‘single’ 「括弧」",
    "em—dash en–dash … ellipsis • bullet · middle dot",
    "naïve café résumé façade coöperate Ångström",
    "Straße Œuvre æther Łódź Ørsted İstanbul",
    "e\u0301 a\u0300 o\u0302 n\u0303 u\u0308 (combining marks)",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319a\u0300\u0301lgo\u0353",
    "ﬁ ﬂ ﬀ ligatures and ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ and ½ ² ³ ™ ℃",
    "你好，世界！今天天气很好。",
    "日本語のテキスト、ひらがなとカタカナと漢字。",
    "한국어 문장입니다. 안녕하세요!",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Ελληνικά: Γειά σου Κόσμε",
    "مرحبا بالعالم! هذا نص عربي.",
    "שלום עולם",
    "नमस्ते दुनिया। यह हिंदी पाठ है।",
    "বাংলা ভাষা",
    "தமிழ் மொழி",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Tiếng Việt có nhiều dấu thanh",
    "ქართული ენა",
    "Հայերեն",
    "አማርኛ",
    "mixed: English 中文 العربية हिन्दी русский 日本語",
    "😀",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "🇺🇸🇫🇷🇯🇵",
    "❤️ ✨ 🎉 🚀 💯",
    "family: 👩🏾‍🤝‍👩🏻 and 🧑‍💻 coding",
    "keycap 1️⃣ #️⃣ and variation ☺︎ ☺️",
    "emoji😀glued😀together",
    "\u200b zero width space \u200c\u200d joiners \u2060",
    "\ufeffbyte order mark",
    "non\u00a0breaking\u00a0spaces and\u2009thin\u202fnarrow",
    "line\u2028separator\u2029paragraph",
    "ideographic\u3000space",
    "control \x00 \x01 \x07 \x1b[31m \x7f chars",
    "vertical\x0btab\x0cform feed",
    "\U0001d54f\U0001d556\U0001d565 math letters \U00010348 gothic \U0001f9ec",
    "def main():\n    print('hello world')\n",
    "def f(x: int) -> int:\n\treturn x ** 2  # square\n",
    'if __name__ == "__main__":\n    main()\n',
    "for (let i = 0; i < n; i++) {\n  console.log(`value: ${i}`);\n}",
    "const f = async (a, b) => { await a?.b ?? c; };",
    '#include <stdio.h>\nint main(void) {\n    printf("%d\\n", 42);\n    return 0;\n}\n',
    'fn main() {\n    let v: Vec<u8> = vec![1, 2, 3];\n    println!("{:?}", v);\n}',
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    '<div class="box"><p>Hello &amp; welcome</p></div>',
    '{"key": [1, 2.5, true, null], "nested": {"a": "b"}}',
    "    indented\n        more\n            most\n",
    "x=1;y=2;z=x+y\n\n\n\nprint(z)",
    "```python\nprint(1)\n```",
    "$ ls -la | grep '.py' && echo \"done\" > /dev/null 2>&1",
    "https://example.com/path?query=1&b=%20#frag",
    "user@example.com",
    "C:\\Users\\name\\file.txt",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    "<|im_end|><|im_end|><|im_start|>",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start",
    "|im_end|>",
    "<s>[INST] Hello [/INST] Hi</s>",
    "<s> leading space after bos",
    "</s><s>",
    "<unk> unknown",
    "< s > not special",
    "<0x41> looks like a byte token",
    "▁ U+2581 lower one eighth block ▁▁▁",
    "Ġ Ċ byte-level lookalikes ĠĊ",
    "a" * 300,
    " " * 40,
    "\n" * 20,
    "ab" * 100,
    "😀" * 30,
    "1" * 100,
    "你" * 50,
]

# Pools for the generated strings.
_SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "latin_ext": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿāăąćčďđēėęěğīįıķĺļľłńņňőœŕřśşšţťūůűųźżž",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЭЮЯ",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأؤإئةى",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשת",
    "devanagari": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह\u093e\u093f\u0940\u0941\u0942"
    "\u0947\u0948\u094b\u094c\u0902\u094d",
    "thai": "กขคงจฉชซญดตถทธนบปผพฟภมยรลวศสหอฮ\u0e31\u0e34\u0e35\u0e48\u0e49",
    "hangul": "가나다라마바사아자차카타파하한국어문장입니다",
    "kana": "あいうえおかきくけこさしすせそアイウエオカキクケコサシスセソー",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得"
    "就那要下以生会自着去之过家学对可她里后小么",
}
_COMBINING = [chr(c) for c in range(0x0300, 0x0370)]
_EMOJI = [
    "😀",
    "😂",
    "🥲",
    "🤖",
    "🐍",
    "🦀",
    "🌍",
    "🔥",
    "✅",
    "❌",
    "⭐",
    "☕",
    "❤️",
    "👋",
    "👍🏻",
    "👍🏿",
    "🙋🏽‍♀️",
    "👩‍🔬",
    "👨‍👨‍👦",
    "🧔🏼‍♂️",
    "🏴‍☠️",
    "🇩🇪",
    "🇧🇷",
    "🇮🇳",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
]
_CODE = [
    "def ",
    "return ",
    "self.",
    "():",
    "=> ",
    "{}",
    "[]",
    "();",
    "    ",
    "\t",
    "\n",
    "if (x) {",
    "} else {",
    "==",
    "!==",
    "+=",
    "->",
    "::",
    "#[derive(Debug)]",
    "import numpy as np",
    "console.log(",
    "std::vector<int>",
    "// comment",
    "# comment",
    "/* block */",
    '"string"',
    "'c'",
    "`tmpl`",
    "\\n",
    "0x1F",
    "i++",
    "x_1",
    "__init__",
    "camelCaseName",
    "SCREAMING_CASE",
]
_WHITESPACE = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ", "\u00a0"]
_PUNCTUATION = list(".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`") + ["...", "--", "—", "–", "¿", "¡", "…"]
_ODD_CODEPOINTS = [
    "\u200b",
    "\u200c",
    "\u200d",
    "\ufeff",
    "\u00ad",
    "\u2028",
    "\u3000",
    "\u0085",
    "\x00",
    "\x1f",
    "\ufffd",
    "\U0010fffd",
    "\ue000",
]


def _word(rng: random.Random) -> str:
    script = rng.choice(list(_SCRIPTS))
    letters = _SCRIPTS[script]
    word = "".join(rng.choice(letters) for _ in range(rng.randint(1, 8)))
    if rng.random() < 0.1:
        word += "".join(rng.choice(_COMBINING) for _ in range(rng.randint(1, 3)))
    return word


def _number(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return str(rng.randint(0, 10 ** rng.randint(1, 30)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"{rng.randint(1, 9)}.{rng.randint(0, 99)}e{rng.randint(-30, 30)}"
    return ",".join(str(rng.randint(0, 999)).zfill(3) for _ in range(rng.randint(2, 5)))


def _random_codepoint(rng: random.Random) -> str:
    while True:
        c = rng.randint(0x20, 0x2FFFF)
        if not 0xD800 <= c <= 0xDFFF:  # surrogates are not characters
            return chr(c)


_PIECES = [
    (_word, 30),
    (_number, 8),
    (lambda rng: rng.choice(_EMOJI), 6),
    (lambda rng: rng.choice(_CODE), 8),
    (lambda rng: rng.choice(_WHITESPACE), 20),
    (lambda rng: rng.choice(_PUNCTUATION), 10),
    (lambda rng: rng.choice(SPECIAL_TOKENS), 3),
    (lambda rng: rng.choice(_ODD_CODEPOINTS), 2),
    (_random_codepoint, 3),
]


def generated(count: int, seed: int = 1234) -> list[str]:
    """`count` strings, each 1 to 24 pieces of the pools above concatenated."""
    rng = random.Random(seed)
    makers = [m for m, _ in _PIECES]
    weights = [w for _, w in _PIECES]
    out = []
    for _ in range(count):
        pieces = rng.choices(makers, weights, k=rng.randint(1, 24))
        out.append("".join(make(rng) for make in pieces))
    return out


# Short generated strings can repeat (a lone "\n"); each string is kept once.
CORPUS: list[str] = list(dict.fromkeys(HAND_PICKED + generated(1200)))
