/* libdsv4 stable C API (C99): load a DeepSeek-V4 model, tokenize, render chats, run sessions,
 * sample and generate, and serve many requests at once through a continuous-batching engine.
 * Opaque handles, `dsv4_status` returns, out-parameters last, detail text in the thread-local
 * dsv4_last_error(). No C++ type or exception crosses this boundary, and the
 * library never exits the process. The full guide with an example is docs/api.md.
 * ABI rule: within one DSV4_ABI_VERSION, functions and struct layouts only grow (new functions,
 * fields carved out of `reserved`); anything else bumps the ABI version and the SONAME. */
#ifndef DSV4_H
#define DSV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(DSV4_BUILDING_LIBRARY) && defined(__GNUC__)
#define DSV4_API __attribute__((visibility("default")))
#else
#define DSV4_API
#endif

/* Marks a function kept for compatibility; `hint` names the replacement. */
#if defined(__GNUC__) || defined(__clang__)
#define DSV4_DEPRECATED(decl, hint) decl __attribute__((deprecated(hint)))
#else
#define DSV4_DEPRECATED(decl, hint) decl
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- versions -------------------------------------------------------------------------------- */

#define DSV4_VERSION_MAJOR 0
#define DSV4_VERSION_MINOR 3
#define DSV4_VERSION_PATCH 0
/* Bumped on any incompatible change to this header; equals the library's SONAME number
 * (libdsv4.so.<DSV4_ABI_VERSION>). Compare with dsv4_abi_version() at run time. */
#define DSV4_ABI_VERSION 1

/* "MAJOR.MINOR.PATCH" of the library actually loaded. Never NULL; static storage. */
DSV4_API const char* dsv4_version(void);
/* DSV4_ABI_VERSION of the library actually loaded. */
DSV4_API uint32_t dsv4_abi_version(void);

/* ---- status and errors ----------------------------------------------------------------------- */

/* The values equal dsv4::Status in include/dsv4/error.hpp (checked at compile time). */
typedef enum dsv4_status {
  DSV4_OK = 0,
  DSV4_ERR_INVALID_ARGUMENT = 1, /* a caller-supplied value is out of range or malformed */
  DSV4_ERR_IO = 2,               /* a file is missing, unreadable or truncated */
  DSV4_ERR_FORMAT = 3,           /* a file or text is readable but not in the required format */
  DSV4_ERR_UNSUPPORTED = 4,      /* valid input this build cannot handle (e.g. no tokenizer) */
  DSV4_ERR_OUT_OF_MEMORY = 5,
  DSV4_ERR_CONTEXT_OVERFLOW = 6, /* the session would exceed its max_context */
  DSV4_ERR_BACKEND = 7,          /* CUDA / device failure */
  DSV4_ERR_CANCELLED = 8,        /* a progress callback asked to stop */
  DSV4_ERR_INTERNAL = 9,         /* a bug: please report it with the dsv4_last_error() text */
  DSV4_ERR_BUFFER_TOO_SMALL = 10, /* the size needed was stored, nothing written */
  DSV4_ERR_BUSY = 11              /* a queue is full (the engine's max_waiting): retry later. Since 0.2 */
} dsv4_status;

/* Text of the last status-returning call made on this thread: the error detail (naming the file,
 * tensor, field or argument) when it failed, "" when it succeeded. Thread-local, valid until the
 * next dsv4_* call on this thread. Never NULL. */
DSV4_API const char* dsv4_last_error(void);
/* "ok", "invalid_argument", ...; "unknown" for values outside the enum. Static storage. */
DSV4_API const char* dsv4_status_name(dsv4_status status);

/* Buffer convention (every function with `buf, cap, n_needed`): the size the full result needs is
 * always stored in *n_needed (elements; for text: bytes, excluding the terminating NUL). If it fits
 * (cap >= *n_needed, plus one byte for the NUL of text results) the result is written (text is
 * NUL-terminated) and DSV4_OK returned; otherwise nothing is written and DSV4_ERR_BUFFER_TOO_SMALL
 * is returned, so `buf = NULL, cap = 0` queries the size. */

/* ---- opaque handles -------------------------------------------------------------------------- */

typedef struct dsv4_model dsv4_model;                   /* loaded weights; immutable, shareable */
typedef struct dsv4_tokenizer dsv4_tokenizer;           /* byte-level BPE tokenizer; shareable */
typedef struct dsv4_stream_decoder dsv4_stream_decoder; /* incremental detokenizer; one owner */
typedef struct dsv4_session dsv4_session;               /* one token timeline + KV state; one thread at a time */
typedef struct dsv4_sampler dsv4_sampler;               /* sampling settings + RNG state; one owner */
typedef struct dsv4_engine dsv4_engine;                 /* continuous-batching engine over a model; any thread */

/* ---- model ----------------------------------------------------------------------------------- */

typedef enum dsv4_log_level {
  DSV4_LOG_FROM_ENV = -1, /* DSV4_LOG_LEVEL environment variable, else warn */
  DSV4_LOG_DEBUG = 0,
  DSV4_LOG_INFO = 1,
  DSV4_LOG_WARN = 2,
  DSV4_LOG_ERROR = 3,
  DSV4_LOG_OFF = 4
} dsv4_log_level;

typedef enum dsv4_numerics {
  DSV4_NUMERICS_REFERENCE = 0,
  DSV4_NUMERICS_OFFICIAL = 1
} dsv4_numerics;

typedef struct dsv4_model_params {
  /* A backend of this build: "cpu" (reference, f32), "null" (no model computation: ids from a hash,
   * for measuring scheduling overhead), "cuda" when built in (the whole forward on one GPU;
   * device_ids[0], default 0). NULL = "cpu". */
  const char* backend;
  int32_t experts_per_token; /* 0 = the config's; K' < K applies the 4-Expert transformation */
  int32_t n_threads;         /* cpu backend: worker threads (its setting "threads"); 0 = hardware
                              * concurrency; ignored by the other backends */
  const int32_t* device_ids; /* CUDA devices (expert-parallel over several); NULL = device 0 */
  size_t n_device_ids;
  bool load_tokenizer;       /* read <dir>/tokenizer.json when present (default true) */
  int32_t log_level;         /* a dsv4_log_level; messages go to stderr (default DSV4_LOG_FROM_ENV) */
  /* Sequence-state memory (every session and engine request draws from it): a byte budget, or
   * max_sequences x (state of max_context tokens) when the budget is 0 and both are set; all 0 =
   * unlimited on the CPU (CUDA: what is free after the weights). Sessions and requests that do not
   * fit fail with DSV4_ERR_OUT_OF_MEMORY (the engine queues or preempts instead). Since 0.2. */
  uint64_t state_budget_bytes;
  int64_t max_sequences;
  int64_t max_context;
  int32_t rollback_tokens;   /* dsv4_session_truncate reaches this many tokens back (default 16) */
  /* A dsv4_numerics: DSV4_NUMERICS_REFERENCE (0, the default: f32 on exactly dequantised weights) or
   * DSV4_NUMERICS_OFFICIAL (DeepSeek's bf16 run with FP8 activation quantisation; the CUDA backend's
   * arithmetic). Since 0.3 (the field was padding that had to be zero). */
  int32_t numerics;
  /* Backend-specific settings, NULL or "key=value,key=value" (cpu: threads=N, indexer_ties=lowest|
   * torch-cpu; null: none). An unknown key is DSV4_ERR_INVALID_ARGUMENT naming the known ones;
   * "threads" here and a non-zero n_threads together are DSV4_ERR_INVALID_ARGUMENT. Since 0.2. */
  const char* backend_params;
  uint64_t reserved[3];      /* must be zero (default_params does it) */
} dsv4_model_params;

typedef struct dsv4_model_info {
  int32_t vocab_size;
  int32_t hidden_size;
  int32_t n_layers;                 /* decoder layers, MTP excluded */
  int32_t n_heads;
  int32_t n_routed_experts;
  int32_t experts_per_token;        /* in effect (after any load-time override) */
  int32_t config_experts_per_token; /* as written in config.json */
  int32_t bos_token_id;
  int32_t eos_token_id;
  int64_t max_position_embeddings;
  bool has_tokenizer;
  char backend[16]; /* NUL-terminated backend name, e.g. "cpu" */
  uint64_t reserved[8];
} dsv4_model_info;

DSV4_API dsv4_model_params dsv4_model_default_params(void);

/* Loads config.json + safetensors shards (and tokenizer.json) from the folder `path`.
 * Returns DSV4_OK and sets *out; DSV4_ERR_INVALID_ARGUMENT (NULL argument, bad params, unknown
 * backend, experts_per_token out of range); DSV4_ERR_IO (missing or unreadable file);
 * DSV4_ERR_FORMAT (bad config or tensors: every problem listed in dsv4_last_error());
 * DSV4_ERR_UNSUPPORTED (backend not built in); DSV4_ERR_OUT_OF_MEMORY; DSV4_ERR_BACKEND.
 * On failure *out is set to NULL and nothing is left allocated. Blocks (may take minutes for
 * large checkpoints); any thread. */
DSV4_API dsv4_status dsv4_model_load(const char* path, const dsv4_model_params* params, dsv4_model** out);

/* Frees the model. Every session of the model must have been freed first. NULL is allowed. */
DSV4_API void dsv4_model_free(dsv4_model* model);

/* Fills *out. DSV4_ERR_INVALID_ARGUMENT on NULL arguments (then *out is untouched). */
DSV4_API dsv4_status dsv4_model_get_info(const dsv4_model* model, dsv4_model_info* out);

/* Sets *out to the model's tokenizer, borrowed: valid while the model lives, never freed by the
 * caller (dsv4_tokenizer_free ignores it). DSV4_ERR_UNSUPPORTED when the model folder had no
 * tokenizer.json (or load_tokenizer was false); then *out = NULL. */
DSV4_API dsv4_status dsv4_model_get_tokenizer(const dsv4_model* model, const dsv4_tokenizer** out);

/* ---- tokenizer ------------------------------------------------------------------------------- */

typedef struct dsv4_tokenizer_info {
  int32_t vocab_size; /* one past the largest id */
  int32_t bos_token_id; /* -1 when none */
  int32_t eos_token_id; /* -1 when none */
  uint64_t reserved[4];
} dsv4_tokenizer_info;

/* Loads a Hugging Face tokenizer.json on its own (no model). DSV4_OK and *out set;
 * DSV4_ERR_IO, DSV4_ERR_FORMAT, DSV4_ERR_UNSUPPORTED, DSV4_ERR_INVALID_ARGUMENT (NULL argument);
 * on failure *out = NULL. */
DSV4_API dsv4_status dsv4_tokenizer_load(const char* path, dsv4_tokenizer** out);
/* Frees a tokenizer from dsv4_tokenizer_load. NULL and borrowed (model) tokenizers are ignored. */
DSV4_API void dsv4_tokenizer_free(dsv4_tokenizer* tokenizer);
DSV4_API dsv4_status dsv4_tokenizer_get_info(const dsv4_tokenizer* tokenizer, dsv4_tokenizer_info* out);

/* Token ids of `text` (`text_len` bytes of UTF-8; need not be NUL-terminated). `add_special`
 * applies the tokenizer's post-processor (DeepSeek-V4 adds nothing: a rendered chat already holds
 * its BOS). Buffer convention above, in tokens. DSV4_ERR_INVALID_ARGUMENT: NULL arguments or
 * invalid UTF-8 (the byte offset is named). Thread-safe. */
DSV4_API dsv4_status dsv4_tokenizer_encode(const dsv4_tokenizer* tokenizer, const char* text, size_t text_len,
                                           bool add_special, int32_t* buf, size_t cap, size_t* n_needed);

/* Text of `tokens` (lossy UTF-8: invalid sequences become U+FFFD). `skip_special` drops special
 * tokens (BOS/EOS/pad). Buffer convention above, in bytes. DSV4_ERR_INVALID_ARGUMENT: NULL
 * arguments or an id outside the vocabulary (named in dsv4_last_error()). Thread-safe. */
DSV4_API dsv4_status dsv4_tokenizer_decode(const dsv4_tokenizer* tokenizer, const int32_t* tokens, size_t n_tokens,
                                           bool skip_special, char* buf, size_t cap, size_t* n_needed);

/* Id of a token in the tokenizer.json spelling (e.g. "<think>", "Ġthe"); *id = -1 and DSV4_OK
 * when the vocabulary has no such token. DSV4_ERR_INVALID_ARGUMENT on NULL arguments. */
DSV4_API dsv4_status dsv4_tokenizer_token_to_id(const dsv4_tokenizer* tokenizer, const char* token, int32_t* id);

/* Incremental detokenizer: push() yields only complete UTF-8 text; flush() yields the rest (an
 * incomplete tail becomes U+FFFD). The tokenizer must outlive the decoder. */
DSV4_API dsv4_status dsv4_stream_decoder_create(const dsv4_tokenizer* tokenizer, bool skip_special,
                                                dsv4_stream_decoder** out);
DSV4_API void dsv4_stream_decoder_free(dsv4_stream_decoder* decoder); /* NULL allowed */
/* Sets *text / *len to the newly complete text (possibly empty), owned by the decoder and valid
 * until its next call. DSV4_ERR_INVALID_ARGUMENT: NULL arguments or an id outside the vocabulary;
 * then the decoder is unchanged. */
DSV4_API dsv4_status dsv4_stream_decoder_push(dsv4_stream_decoder* decoder, int32_t token, const char** text,
                                              size_t* len);
DSV4_API dsv4_status dsv4_stream_decoder_flush(dsv4_stream_decoder* decoder, const char** text, size_t* len);

/* ---- chat format (DeepSeek-V4 encoding_dsv4: shared/spec/dsv4-chat-format.md) ---------------- */

typedef struct dsv4_chat_params {
  const char* thinking_mode;    /* "chat" or "thinking"; NULL = "chat" */
  bool drop_thinking;           /* drop reasoning of turns before the last user turn (default true) */
  bool add_default_bos_token;   /* default true */
  const char* reasoning_effort; /* NULL, "high" or "max" */
  const char* context_json;     /* NULL, or a JSON array of earlier messages already in the cache */
  const char* revision;         /* encoder release: NULL or "original" (V4-Flash), "0731" */
  uint64_t reserved[8];
} dsv4_chat_params;

DSV4_API dsv4_chat_params dsv4_chat_default_params(void);

/* Renders OpenAI-style messages (`messages_json`: a NUL-terminated JSON array) into the prompt
 * string, byte-identical to DeepSeek's encode_messages. Tokenize the result without adding special
 * tokens. Buffer convention above, in bytes. DSV4_ERR_INVALID_ARGUMENT: NULL arguments, JSON that
 * does not parse, or messages the encoder rejects (unknown role, bad thinking_mode or effort). */
DSV4_API dsv4_status dsv4_chat_render(const char* messages_json, const dsv4_chat_params* params, char* buf,
                                      size_t cap, size_t* n_needed);

/* Parses one assistant completion (the text generated after the prompt) into a JSON object
 * {"role":"assistant","content":…,"reasoning_content":…,"tool_calls":[…]}. `strict` follows the
 * release parser (DSV4_ERR_FORMAT on truncated or malformed output); otherwise the lenient serving
 * rules apply (missing EOS / </think> accepted). Buffer convention above, in bytes.
 * DSV4_ERR_INVALID_ARGUMENT: NULL arguments or a bad thinking_mode. */
DSV4_API dsv4_status dsv4_chat_parse(const char* text, size_t text_len, const char* thinking_mode, bool strict,
                                     char* buf, size_t cap, size_t* n_needed);

/* Streaming completion parser: fed generated text in any pieces (e.g. token by token), it reports
 * typed deltas that never contain <think>, </think>, BOS/EOS or DSML markup; the deltas of each
 * kind add up to the final message's fields. One owner. */
typedef struct dsv4_chat_stream dsv4_chat_stream;

typedef enum dsv4_delta_kind {
  DSV4_DELTA_REASONING = 0,
  DSV4_DELTA_CONTENT = 1,
  DSV4_DELTA_TOOL_CALL_NAME = 2,     /* `tool_index` tells which call */
  DSV4_DELTA_TOOL_CALL_ARGUMENTS = 3 /* a piece of the call's arguments JSON text */
} dsv4_delta_kind;

/* Receives one delta (`text` is not NUL-terminated, valid during the call). */
typedef void (*dsv4_delta_callback)(int32_t kind, int32_t tool_index, const char* text, size_t len,
                                    void* user_data);

/* DSV4_ERR_INVALID_ARGUMENT (NULL out, bad thinking_mode); on failure *out = NULL. `strict`
 * only changes dsv4_chat_stream_result (release verdict); deltas are the same either way. */
DSV4_API dsv4_status dsv4_chat_stream_create(const char* thinking_mode, bool strict, dsv4_chat_stream** out);
DSV4_API void dsv4_chat_stream_free(dsv4_chat_stream* stream); /* NULL allowed */
/* Feeds `len` bytes; `callback` (may be NULL) gets the deltas that became certain, in order.
 * DSV4_ERR_INVALID_ARGUMENT: NULL stream, or the stream was already finished. */
DSV4_API dsv4_status dsv4_chat_stream_feed(dsv4_chat_stream* stream, const char* text, size_t len,
                                           dsv4_delta_callback callback, void* user_data);
/* End of generation: flushes held-back text as deltas. Idempotent. */
DSV4_API dsv4_status dsv4_chat_stream_finish(dsv4_chat_stream* stream, dsv4_delta_callback callback,
                                             void* user_data);
/* The final message as JSON (same shape as dsv4_chat_parse); requires finish. Buffer convention.
 * DSV4_ERR_INVALID_ARGUMENT before finish; DSV4_ERR_FORMAT in strict mode when the release parser
 * would reject the text. */
DSV4_API dsv4_status dsv4_chat_stream_result(const dsv4_chat_stream* stream, char* buf, size_t cap,
                                             size_t* n_needed);

/* ---- sessions -------------------------------------------------------------------------------- */

typedef enum dsv4_logits_mode {
  DSV4_LOGITS_NONE = 0, /* no logits (cheapest: intermediate prefill chunks) */
  DSV4_LOGITS_LAST = 1, /* the last token's row */
  DSV4_LOGITS_ALL = 2   /* one row per appended token */
} dsv4_logits_mode;

typedef struct dsv4_session_stats {
  int64_t position;           /* tokens in the session now */
  int64_t max_context;
  int64_t n_prompt_tokens;    /* tokens appended by append / prefill / generate prompts, cumulative */
  int64_t n_generated_tokens; /* tokens sampled by generate, cumulative */
  double prefill_seconds;     /* time spent on prompt tokens, cumulative */
  double decode_seconds;      /* time spent on generated tokens, cumulative */
  int64_t n_generate_calls;
  uint64_t reserved[8];
} dsv4_session_stats;

/* Creates an empty session (position 0) on `model`. `max_context` 0 = the model's
 * max_position_embeddings. DSV4_ERR_INVALID_ARGUMENT (NULL, negative or too large max_context),
 * DSV4_ERR_OUT_OF_MEMORY, DSV4_ERR_BACKEND; on failure *out = NULL. The session must be freed
 * before its model. */
DSV4_API dsv4_status dsv4_session_create(const dsv4_model* model, int64_t max_context, dsv4_session** out);
DSV4_API void dsv4_session_free(dsv4_session* session); /* NULL allowed */

/* Runs `n_tokens` (>= 1) tokens through the model at positions position() .. position()+n-1 and
 * keeps the logits `mode` asks for. Any chunking of a prompt over several calls gives the same
 * logits as one call. DSV4_ERR_INVALID_ARGUMENT (NULL, n_tokens == 0, an id outside [0, vocab),
 * bad mode), DSV4_ERR_CONTEXT_OVERFLOW (position()+n > max_context), DSV4_ERR_OUT_OF_MEMORY,
 * DSV4_ERR_BACKEND. On any failure the session is exactly as before the call (same position,
 * same logits). Blocks; one thread per session at a time. */
DSV4_API dsv4_status dsv4_session_append(dsv4_session* session, const int32_t* tokens, size_t n_tokens,
                                         dsv4_logits_mode mode);

/* Called between prefill chunks with the tokens done so far; return non-zero to stop. */
typedef int (*dsv4_progress_callback)(int64_t n_done, int64_t n_total, void* user_data);

/* Appends a long prompt in chunks of `chunk` tokens (0 = one chunk) keeping the last token's
 * logits, calling `progress` (may be NULL) after each chunk. Errors as dsv4_session_append, plus
 * DSV4_ERR_CANCELLED when `progress` returned non-zero (also after the last chunk). After a failure
 * or cancellation the session holds the chunks that completed (position() tells how many tokens);
 * logits are kept only when the last chunk completed (a cancel after it leaves every token appended
 * and the last token's logits), otherwise there are none. */
DSV4_API dsv4_status dsv4_session_prefill(dsv4_session* session, const int32_t* tokens, size_t n_tokens,
                                          int32_t chunk, dsv4_progress_callback progress, void* user_data);

/* Logits of the last append / prefill: `*rows` rows of `*n_vocab` floats, row-major, owned by the
 * session and valid until its next call; *rows = 0 and *logits = NULL when the last call kept none
 * (dsv4_session_generate, truncate, reset and a DSV4_LOGITS_NONE append keep none: generation samples
 * inside the backend). DSV4_ERR_INVALID_ARGUMENT on NULL arguments. */
DSV4_API dsv4_status dsv4_session_get_logits(const dsv4_session* session, const float** logits, int64_t* rows,
                                             int64_t* n_vocab);

/* Every token in the session, in order. Buffer convention above, in tokens. */
DSV4_API dsv4_status dsv4_session_get_tokens(const dsv4_session* session, int32_t* buf, size_t cap,
                                             size_t* n_needed);

/* Usage counters (kept across dsv4_session_reset; a fork starts from zero). */
DSV4_API dsv4_status dsv4_session_get_stats(const dsv4_session* session, dsv4_session_stats* out);

/* Back to position 0 (the KV state is dropped, memory kept). DSV4_ERR_INVALID_ARGUMENT on NULL. */
DSV4_API dsv4_status dsv4_session_reset(dsv4_session* session);

/* Back to an earlier `position` (0 <= position <= the current one): the session then continues
 * exactly as one that never went further. Cheap for up to dsv4_model_params.rollback_tokens tokens
 * back, and for 0 (= reset); further back is DSV4_ERR_INVALID_ARGUMENT naming the bound (fork the
 * session at the point you may return to instead). Drops the logits. DSV4_ERR_INVALID_ARGUMENT also
 * for NULL or a position outside [0, position]; then the session is unchanged. Since 0.2. */
DSV4_API dsv4_status dsv4_session_truncate(dsv4_session* session, int64_t position);

/* An independent copy of the session's state (tokens, KV, logits) — e.g. to branch after a shared
 * system prompt. DSV4_ERR_INVALID_ARGUMENT (NULL), DSV4_ERR_OUT_OF_MEMORY; on failure *out = NULL
 * and the source is unchanged. */
DSV4_API dsv4_status dsv4_session_fork(const dsv4_session* session, dsv4_session** out);

/* ---- sampling -------------------------------------------------------------------------------- */

typedef struct dsv4_sampler_params {
  float temperature;        /* 0 = greedy (ties: lowest id); default 1 */
  int32_t top_k;            /* 0 = off */
  float top_p;              /* 1 = off */
  float min_p;              /* 0 = off; keep tokens with p >= min_p * p_max */
  float repetition_penalty; /* 1 = off; over the history */
  float frequency_penalty;  /* 0 = off */
  float presence_penalty;   /* 0 = off */
  uint64_t seed;            /* sampling is deterministic for a seed */
  uint64_t reserved[4];
} dsv4_sampler_params;

DSV4_API dsv4_sampler_params dsv4_sampler_default_params(void);

/* DSV4_ERR_INVALID_ARGUMENT (NULL, negative temperature, top_p outside (0, 1], ...; the field is
 * named); on failure *out = NULL. */
DSV4_API dsv4_status dsv4_sampler_create(const dsv4_sampler_params* params, dsv4_sampler** out);
DSV4_API void dsv4_sampler_free(dsv4_sampler* sampler); /* NULL allowed */

/* Samples one id from a logits row of `n_vocab` floats; penalties apply over `history` (may be
 * NULL when n_history is 0). Advances the sampler's RNG. DSV4_ERR_INVALID_ARGUMENT on NULL
 * arguments or n_vocab == 0; then *token is untouched. */
DSV4_API dsv4_status dsv4_sampler_sample(dsv4_sampler* sampler, const float* logits, size_t n_vocab,
                                         const int32_t* history, size_t n_history, int32_t* token);

/* Samples from the session's last logits row with the session's tokens as history. Does not
 * append the token. DSV4_ERR_INVALID_ARGUMENT when the session holds no logits. */
DSV4_API dsv4_status dsv4_session_sample(const dsv4_session* session, dsv4_sampler* sampler, int32_t* token);

/* ---- generation ------------------------------------------------------------------------------ */

typedef enum dsv4_stop_reason {
  DSV4_STOP_EOS = 0,          /* the EOS token (kept in the tokens, not in the text) */
  DSV4_STOP_STRING = 1,       /* a stop string appeared (it is not passed to the callback's text) */
  DSV4_STOP_MAX_TOKENS = 2,
  DSV4_STOP_CONTEXT_FULL = 3,
  DSV4_STOP_CANCELLED = 4,    /* the token callback returned non-zero / dsv4_engine_cancel */
  DSV4_STOP_TOKEN = 5,        /* one of stop_token_ids (kept in the tokens). Since 0.2 */
  DSV4_STOP_ERROR = 6         /* engine requests: the backend failed for this sample. Since 0.2 */
} dsv4_stop_reason;

typedef struct dsv4_generate_params {
  int32_t max_new_tokens;           /* default 256 */
  dsv4_sampler_params sampler;
  bool stop_on_eos;                 /* default true; EOS = the tokenizer's, else config.json's */
  const char* const* stop_strings;  /* may be NULL */
  size_t n_stop_strings;
  int32_t prefill_chunk;            /* 0 = the whole prompt in one step */
  const int32_t* stop_token_ids;    /* generation stops after one of these (kept); may be NULL. Since 0.2 */
  size_t n_stop_token_ids;
  uint64_t reserved[6];
} dsv4_generate_params;

typedef struct dsv4_generate_result {
  int64_t n_prompt_tokens;
  int64_t n_generated_tokens;
  int32_t stop_reason; /* a dsv4_stop_reason */
  double prefill_seconds;
  double decode_seconds;
  uint64_t reserved[4];
} dsv4_generate_result;

/* Called once per generated token, on the generating thread, with the token id and the text that
 * became complete with it (UTF-8, possibly empty, not NUL-terminated, valid during the call).
 * Return non-zero to stop (the result's stop_reason is then DSV4_STOP_CANCELLED). */
typedef int (*dsv4_token_callback)(int32_t token, const char* piece, size_t piece_len, void* user_data);

DSV4_API dsv4_generate_params dsv4_generate_default_params(void);

/* Appends `prompt` (n_prompt >= 1; the session may already hold earlier turns), then samples and
 * decodes until EOS, a stop token, a stop string, max_new_tokens, the context limit or the callback
 * stops it. Sampling runs inside the backend's steps. Afterwards the session holds the prompt and
 * every generated token (the last one included, also after a cancel), and no logits. Text pieces
 * need the model's tokenizer; without one they are empty (and stop strings are
 * DSV4_ERR_INVALID_ARGUMENT). `callback` and `result` may be NULL. Returns DSV4_OK for every stop
 * reason (including cancellation); DSV4_ERR_INVALID_ARGUMENT (NULL, bad ids, sampler or stop
 * params; session unchanged), DSV4_ERR_CONTEXT_OVERFLOW (the prompt itself does not fit; session
 * unchanged), DSV4_ERR_OUT_OF_MEMORY / DSV4_ERR_BACKEND (session state unspecified: reset it).
 * Blocks; one thread per session at a time. */
DSV4_API dsv4_status dsv4_session_generate(dsv4_session* session, const int32_t* prompt, size_t n_prompt,
                                           const dsv4_generate_params* params, dsv4_token_callback callback,
                                           void* user_data, dsv4_generate_result* result);

/* "eos", "stop_string", "max_tokens", "context_full", "cancelled", "stop_token", "error";
 * "unknown" otherwise. Static storage. */
DSV4_API const char* dsv4_stop_reason_name(int32_t reason);
/* OpenAI's grouping of a dsv4_stop_reason: "stop" (eos, stop string, stop token), "length"
 * (max tokens, context full), "abort" (cancelled), "error"; "unknown" otherwise. Since 0.2. */
DSV4_API const char* dsv4_finish_reason_name(int32_t reason);

/* ---- engine: continuous batching over many requests (since 0.2) ------------------------------ */

/* An engine runs many requests on one model at once: each step batches one decode token of every
 * running sequence with prefill chunks of newly admitted prompts (first come, first served, within
 * max_num_seqs, max_num_batched_tokens and the model's state memory). Requests are submitted from
 * any thread; the engine's own thread runs the steps; results are streamed through a callback
 * and/or read by polling, and kept until released. Greedy output equals dsv4_session_generate of
 * the same prompt. An engine must be freed before its model; sessions may run beside it. */

typedef enum dsv4_preemption {
  /* When a decode step needs state memory that is not free, the most recently admitted sequence is
   * preempted (its state dropped) and recomputed later from its prompt and tokens; its output is
   * the same as without preemption (vLLM's default). */
  DSV4_PREEMPT_RECOMPUTE = 0,
  /* Admit a request only when prompt + max_tokens of all its samples fit; never preempt. */
  DSV4_PREEMPT_RESERVE = 1
} dsv4_preemption;

typedef struct dsv4_engine_params {
  int32_t max_num_seqs;           /* sequences in one step (default 256) */
  int32_t max_num_batched_tokens; /* tokens in one step, decodes + prefill chunks (default 2048) */
  int64_t max_model_len;          /* per-sequence context, prompt + output; 0 = max_position_embeddings */
  int32_t max_waiting;            /* queued requests beyond which submit says DSV4_ERR_BUSY; 0 = unlimited */
  int32_t max_n;                  /* largest samples per request (default 16) */
  int32_t preemption;             /* a dsv4_preemption (default DSV4_PREEMPT_RECOMPUTE) */
  int32_t pad_;                   /* must be zero */
  uint64_t reserved[8];           /* must be zero */
} dsv4_engine_params;

typedef struct dsv4_request_params {
  dsv4_sampler_params sampler;      /* sample i of n draws with seed + i */
  int32_t max_tokens;               /* generated tokens per sample, >= 1 (default 16, as vLLM) */
  bool ignore_eos;                  /* default false: EOS (the tokenizer's, else config.json's) stops */
  const int32_t* stop_token_ids;    /* a sample stops after one of these (kept); may be NULL */
  size_t n_stop_token_ids;
  const char* const* stop_strings;  /* a sample stops once its text holds one (removed); needs the tokenizer */
  size_t n_stop_strings;
  int32_t n;                        /* samples of the prompt, 1 .. max_n (default 1); the prompt is prefilled once */
  int32_t logprobs;                 /* -1 = none (default); k in 0..20 = the sampled token's log-probability
                                     * plus the k most likely alternatives, of the model's raw distribution */
  const int32_t* logit_bias_ids;    /* added to the logits of these ids before sampling; may be NULL */
  const float* logit_bias_values;
  size_t n_logit_bias;
  uint64_t reserved[8];             /* must be zero */
} dsv4_request_params;

typedef struct dsv4_token_logprob {
  int32_t id;    /* -1 in padding entries */
  float logprob; /* natural log; -INFINITY in padding entries */
} dsv4_token_logprob;

/* One event of a request, handed to its callback: a new token of sample `index` with the text that
 * became final with it, and/or the end of that sample. Every sample ends with exactly one event
 * whose finish_reason is not -1 (it may carry the last token, or token -1 when it ended without
 * one: cancelled, error). Pointers are valid during the callback only. */
typedef struct dsv4_request_event {
  uint64_t request_id;
  int32_t index;                   /* the sample, 0 .. n-1 */
  int32_t token;                   /* the new token, or -1 */
  const char* piece;               /* UTF-8, not NUL-terminated, possibly empty; never part of a stop string */
  size_t piece_len;
  int32_t finish_reason;           /* -1: the sample goes on; else the dsv4_stop_reason it ended with */
  float logprob;                   /* of `token` when the request asked logprobs >= 0, else 0 */
  int32_t n_top;                   /* entries in `top` (the request's logprobs, or 0) */
  const dsv4_token_logprob* top;   /* the most likely tokens at this step, best first; NULL when n_top is 0 */
  const char* error;               /* NUL-terminated: why, with DSV4_STOP_ERROR; "" otherwise */
  uint64_t reserved[4];
} dsv4_request_event;

/* Runs on the engine's thread after each step (or, for requests still unfinished at
 * dsv4_engine_free, on the freeing thread): keep it short — the whole batch waits. It may call
 * dsv4_engine_submit, dsv4_engine_cancel (also for its own request) and the dsv4_engine_get_*
 * functions (not while dsv4_engine_free runs: then they return DSV4_ERR_INVALID_ARGUMENT);
 * dsv4_engine_wait and dsv4_engine_release return DSV4_ERR_INVALID_ARGUMENT there, and it must not
 * call dsv4_engine_free. */
typedef void (*dsv4_request_callback)(const dsv4_request_event* event, void* user_data);

typedef struct dsv4_engine_stats {
  int64_t running;                /* sequences with state in the backend */
  int64_t waiting;                /* requests (or preempted samples) not yet running */
  int64_t finished_requests;      /* cumulative, by how they ended */
  int64_t cancelled_requests;
  int64_t failed_requests;
  int64_t prompt_tokens;          /* tokens prefilled (recomputation after preemption included) */
  int64_t generated_tokens;
  int64_t steps;
  int64_t preemptions;
  uint64_t state_used_bytes;      /* the model's state memory in use now (sessions included) */
  uint64_t state_budget_bytes;    /* 0 = unlimited */
  double last_step_seconds;
  uint64_t reserved[8];
} dsv4_engine_stats;

typedef struct dsv4_request_info {
  int64_t n_prompt_tokens;
  int32_t n;                      /* samples */
  int32_t n_finished;             /* samples that ended */
  bool finished;                  /* every sample ended */
  int32_t preemptions;            /* times a sample of it was preempted (DSV4_PREEMPT_RECOMPUTE) */
  double queue_seconds;           /* submit -> first scheduled */
  double ttft_seconds;            /* submit -> first token of sample 0 (0 before it) */
  double e2e_seconds;             /* submit -> last sample finished (0 before) */
  uint64_t reserved[8];
} dsv4_request_info;

DSV4_API dsv4_engine_params dsv4_engine_default_params(void);
DSV4_API dsv4_request_params dsv4_request_default_params(void);

/* Creates an engine on `model` (params NULL = defaults) and starts its thread, which sleeps while
 * there is no work. DSV4_ERR_INVALID_ARGUMENT (NULL model or out, a value out of range, non-zero
 * reserved fields, max_model_len above max_position_embeddings); on failure *out = NULL. */
DSV4_API dsv4_status dsv4_engine_create(const dsv4_model* model, const dsv4_engine_params* params,
                                        dsv4_engine** out);
/* Stops the engine: unfinished requests end as DSV4_STOP_CANCELLED (their callbacks get that final
 * event), then everything is freed. Must come before dsv4_model_free. NULL is allowed. Blocks until
 * the engine's thread ended (at most one step). Must not be called from a request callback. */
DSV4_API void dsv4_engine_free(dsv4_engine* engine);

/* Queues a request for `prompt` (n_prompt >= 1 ids; copied) and sets *request_id (> 0; 0 on
 * failure). `params` NULL = dsv4_request_default_params(); `callback` may be NULL (poll instead).
 * Nothing is queued on failure: DSV4_ERR_INVALID_ARGUMENT (NULL, an id outside the vocabulary, bad
 * sampler or stop params, n outside 1..max_n, logprobs outside -1..20, non-zero reserved, stop
 * strings without a tokenizer), DSV4_ERR_CONTEXT_OVERFLOW (the prompt is longer than max_model_len),
 * DSV4_ERR_OUT_OF_MEMORY (the request can never fit the model's state memory), DSV4_ERR_BUSY (the
 * waiting queue holds max_waiting requests). Any thread. */
DSV4_API dsv4_status dsv4_engine_submit(dsv4_engine* engine, const int32_t* prompt, size_t n_prompt,
                                        const dsv4_request_params* params, dsv4_request_callback callback,
                                        void* user_data, uint64_t* request_id);

/* Cancels a queued or running request at the next step: its unfinished samples end with
 * DSV4_STOP_CANCELLED (keeping the tokens so far). Unknown or finished ids are ignored (DSV4_OK).
 * Any thread, also from a callback. */
DSV4_API dsv4_status dsv4_engine_cancel(dsv4_engine* engine, uint64_t request_id);

/* Blocks until the request finished — every sample ended and its final callback returned, so
 * what the callback uses may be freed — or `timeout_seconds` passed (< 0: no limit; 0: just look);
 * *finished (may be NULL) tells which. DSV4_OK either way; DSV4_ERR_INVALID_ARGUMENT for NULL, a NaN
 * timeout, an unknown (never submitted, or released) id, or a call from a request callback. */
DSV4_API dsv4_status dsv4_engine_wait(dsv4_engine* engine, uint64_t request_id, double timeout_seconds,
                                      bool* finished);

/* Sample `index`'s tokens so far (buffer convention, in tokens; a consistent snapshot while it runs)
 * and, when finish_reason is not NULL, -1 while it runs or the dsv4_stop_reason it ended with (set
 * whenever the id and index are valid, also with DSV4_ERR_BUFFER_TOO_SMALL). DSV4_ERR_INVALID_ARGUMENT:
 * NULL, unknown id, index outside 0..n-1. */
DSV4_API dsv4_status dsv4_engine_get_output(const dsv4_engine* engine, uint64_t request_id, int32_t index,
                                            int32_t* tokens, size_t cap, size_t* n_needed, int32_t* finish_reason);
/* Sample `index`'s text so far (buffer convention, in bytes): complete UTF-8, the stop string
 * removed; "" without a tokenizer. Errors as dsv4_engine_get_output. */
DSV4_API dsv4_status dsv4_engine_get_text(const dsv4_engine* engine, uint64_t request_id, int32_t index,
                                          char* buf, size_t cap, size_t* n_needed);
/* Sample `index`'s log-probabilities (buffer convention, in entries): for each token so far, 1 +
 * logprobs entries — the sampled token, then the `logprobs` most likely ones best first (padded with
 * id -1). 0 entries when the request asked none. Errors as dsv4_engine_get_output. */
DSV4_API dsv4_status dsv4_engine_get_logprobs(const dsv4_engine* engine, uint64_t request_id, int32_t index,
                                              dsv4_token_logprob* buf, size_t cap, size_t* n_needed);
/* Why sample `index` ended with DSV4_STOP_ERROR (buffer convention, in bytes); "" otherwise. */
DSV4_API dsv4_status dsv4_engine_get_error(const dsv4_engine* engine, uint64_t request_id, int32_t index,
                                           char* buf, size_t cap, size_t* n_needed);
/* Counts and timings of a request. DSV4_ERR_INVALID_ARGUMENT: NULL, unknown id. */
DSV4_API dsv4_status dsv4_engine_get_request_info(const dsv4_engine* engine, uint64_t request_id,
                                                  dsv4_request_info* out);
/* Forgets a finished request (its outputs are kept until then); its id becomes unknown.
 * DSV4_ERR_INVALID_ARGUMENT: NULL, unknown id, a request still running (cancel and wait first), or a
 * call from a request callback. */
DSV4_API dsv4_status dsv4_engine_release(dsv4_engine* engine, uint64_t request_id);
/* Engine-wide counters now. DSV4_ERR_INVALID_ARGUMENT on NULL. Any thread. */
DSV4_API dsv4_status dsv4_engine_get_stats(const dsv4_engine* engine, dsv4_engine_stats* out);

#ifdef __cplusplus
}
#endif
#endif /* DSV4_H */
