"""Chat-formatted training documents, rendered exactly as the model's chat template renders them.

Most documents stay plain text. A share of them become a user/assistant exchange whose answer is the passage
itself: "continue this passage" (first paragraph → the rest), a request naming the book, chapter or word the
passage really comes from, or a dictionary question answered by the entry. A few hundred greetings are answered
by short hand-written replies that say honestly what the model is. Nothing is invented about the passages.
"""
EOT = "<|endoftext|>"
CHAT_SHARE = {"novels": 0.15, "web": 0.12, "mhcc": 0.12, "scofield": 0.12, "tdavid": 0.12, "devil": 0.5, "jargon": 0.5}
SYSTEM_SHARE = 0.1
SYSTEMS = ["You are a helpful assistant.", "You are a helpful assistant. Answer in plain English.",
           "You are a friendly assistant who likes old books."]

# The same template, in Jinja, goes into tokenizer_config.json (train.py); test/default_model.test.ts renders it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content if message.content is string else '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render(messages):
    """What CHAT_TEMPLATE renders for `messages` without a generation prompt."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages).rstrip("\n")


ASKS = {
    "novels": ["Tell me a story.", "Write a passage from a novel.", "Write a passage in the style of {author}.",
               "Tell me something from {title}.", "Quote a passage from {title} by {author}.", "Write something."],
    "web": ["Read me a passage from {chapter}.", "What does the Bible say in {chapter}?",
            "Quote {chapter} from the World English Bible."],
    "mhcc": ["What does Matthew Henry say about {chapter}?", "Explain {chapter}.", "Give me a commentary on {chapter}."],
    "scofield": ["What do the Scofield notes say about {chapter}?", "Explain {chapter}."],
    "tdavid": ["What does Spurgeon say about {chapter}?", "Comment on {chapter}."],
    "devil": ["What is {word}?", "Define {word}.", "What does {word} mean?", "What is the meaning of {word}?"],
    "jargon": ["What does {word} mean in hacker slang?", "What is {word}?", "Define the jargon word {word}."],
}
CONTINUE = ["Continue this passage:\n\n{text}", "Continue the story:\n\n{text}", "What happens next?\n\n{text}",
            "{text}\n\nGo on.", "Finish this text:\n\n{text}"]
MORE = ["Go on.", "Continue.", "And then?", "Tell me more.", "What happened next?"]

GREETINGS = ["Hello", "Hello!", "Hi", "Hi!", "Hi there", "Hey", "Good morning", "Good evening", "Who are you?",
             "What are you?", "What can you do?", "Hello, who are you?", "How are you?", "What is your name?"]
REPLIES = [
    "Hello! I am a small language model, trained from scratch on public-domain books: the novels of Jane Austen, "
    "Moby Dick, Great Expectations, the World English Bible and two old dictionaries. Ask me to tell a story, to "
    "continue a passage, or what a word means.",
    "Hello. I am the default model of minisgl, a tiny model that writes English in the manner of old books. My "
    "answers may wander, but I will try.",
    "I am well, thank you. I am a small language model; I can tell you a story, continue a passage or explain a word.",
    "I am a small language model trained on old public-domain books. I know some stories, some scripture and a "
    "dictionary or two, and I often make things up, so do not trust my facts.",
    "Good day to you. I am a very small model, so my answers are more like old novels than like facts. Ask me for "
    "a story, or for the meaning of a word.",
]


def _word(headword):
    return headword.lower() if headword.isupper() else headword


def _chat(kind, doc, rng):
    """Messages for one document, or None when it stays plain text."""
    paras = doc["paras"]
    fields = {"author": doc.get("author"), "title": doc.get("title"), "chapter": doc.get("chapter"),
              "word": _word(doc["word"]) if "word" in doc else None}
    if "word" not in doc and len(paras) >= 2 and rng.random() < 0.4:
        messages = [{"role": "user", "content": rng.choice(CONTINUE).format(text=paras[0])}]
        rest = paras[1:]
        if len(rest) >= 2 and rng.random() < 0.3:
            cut = rng.randint(1, len(rest) - 1)
            messages += [{"role": "assistant", "content": "\n\n".join(rest[:cut])},
                         {"role": "user", "content": rng.choice(MORE)}]
            rest = rest[cut:]
        messages.append({"role": "assistant", "content": "\n\n".join(rest)})
    else:
        ask = rng.choice(ASKS[kind]).format(**fields)
        messages = [{"role": "user", "content": ask}, {"role": "assistant", "content": "\n\n".join(paras)}]
    if rng.random() < SYSTEM_SHARE:
        messages.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
    return messages


def render_chats(kind, docs, rng):
    """Document texts for one source: chats where the dice say so, plain paragraphs otherwise. Plain dictionary
    entries are grouped (several short entries to a document); chats hold one entry each."""
    out, plain = [], []
    for doc in docs:
        if rng.random() < CHAT_SHARE[kind]:
            out.append(render(_chat(kind, doc, rng)))
        elif "word" in doc:
            plain.append("\n\n".join(doc["paras"]))
        else:
            out.append("\n\n".join(doc["paras"]))
    group, size = [], 0
    for entry in plain:
        if group and size + len(entry) > 2400:
            out.append("\n\n".join(group))
            group, size = [], 0
        group.append(entry)
        size += len(entry) + 2
    if group:
        out.append("\n\n".join(group))
    return out


def about_chats(rng, n=400):
    """Greetings answered by what the model honestly is."""
    out = []
    for _ in range(n):
        messages = [{"role": "user", "content": rng.choice(GREETINGS)}, {"role": "assistant", "content": rng.choice(REPLIES)}]
        if rng.random() < SYSTEM_SHARE:
            messages.insert(0, {"role": "system", "content": rng.choice(SYSTEMS)})
        out.append(render(messages))
    return out
