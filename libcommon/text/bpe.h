/* bpe.h - OpenAI CLIP's byte-level BPE tokenizer (clip/simple_tokenizer.py),
 * exactly: ftfy stand-in (NFC), double HTML unescape, whitespace clean, full
 * Unicode lowercase, the CLIP pre-tokenizer pattern (special tokens,
 * contractions, letters, single numbers, other runs), bytes_to_unicode,
 * merges by rank, '</w>' word ends.
 *
 * Vocabulary ids: 256 byte symbols, the same 256 with '</w>', then one id per
 * merge in merge order, then <|startoftext|> and <|endoftext|>. */
#ifndef UNCLIP_BPE_H
#define UNCLIP_BPE_H

#include <stddef.h>
#include <stdint.h>

typedef struct uc_bpe uc_bpe;

/* OpenAI's bpe_simple_vocab_16e6.txt.gz: the first line is a header, the
 * next 48894 lines are used (read with zlib; an uncompressed file works
 * too). NULL and uc_err on failure. Takes a few ms. */
uc_bpe *uc_bpe_load_gz(const char *path);
/* Merges as text in the same format (header line, then "a b" per line),
 * uncompressed, as a model file carries them in its metadata; nmerges < 0
 * uses every line after the header (a final newline is fine). text[0..len)
 * need not end in NUL. Refused: a line that is not two non-empty symbols
 * separated by one space (a trailing CR is allowed), invalid UTF-8, a line
 * over 1024 bytes, more than 2^20 merges, fewer lines than nmerges.
 * Duplicates act as in Python's dicts: the last rank / id wins. */
uc_bpe *uc_bpe_load_text(const char *text, size_t len, int nmerges);
void uc_bpe_free(uc_bpe *b);
int uc_bpe_vocab_size(const uc_bpe *b);
int32_t uc_bpe_sot(const uc_bpe *b);
int32_t uc_bpe_eot(const uc_bpe *b);
/* The vocabulary string of id (bytes_to_unicode symbols, "</w>" at a word
 * end, as in the merges file): *len bytes at the returned pointer, not
 * NUL-terminated, valid while b lives; NULL when id is outside the
 * vocabulary. */
const char *uc_bpe_piece(const uc_bpe *b, int32_t id, size_t *len);

/* The vocabulary file: $UNCLIP_VOCAB when set (returned even if missing, so
 * that loading it names the path), else UC_SHARE_DIR/bpe_simple_vocab_16e6.txt.gz,
 * else ../shared/vocab/ relative to the working directory, else relative to
 * the directory above the binary's directory (or one or two above that, for
 * build/NAME/bin). NULL when none exists. Static storage. */
const char *uc_bpe_default_path(void);

/* SimpleTokenizer.encode: ids without SOT/EOT. Writes at most max ids (ids
 * may be NULL with max 0) and returns the full count (which may exceed
 * max), or -1 with uc_err on invalid UTF-8, text over 16 MiB, or a decimal
 * character reference of more than 4300 digits (Python's int() refuses it,
 * so clip.tokenize raises). Literal "<|startoftext|>" / "<|endoftext|>" in
 * the text become the special ids, as upstream. */
int uc_bpe_encode(const uc_bpe *b, const char *text, int32_t *ids, int max);

/* clip.tokenize for one string: tokens[ctx] = SOT, ids, EOT, zeros and
 * mask[ctx] = 1 for SOT..EOT inclusive (Karlo's mask; mask may be NULL).
 * When the text does not fit: truncate keeps ctx tokens with the last set
 * to EOT; otherwise -1 with an error "text is too long for context length
 * CTX: it needs N tokens". 0 on success; ctx must be >= 1. */
int uc_tokenize(const uc_bpe *b, const char *text, int ctx, int truncate, int32_t *tokens, uint8_t *mask);

#endif
