// BPE merging on raw bytes: a word starts as one symbol per byte (its byte-level token id), then
// the adjacent pair with the lowest merge rank is merged, leftmost first on ties, until no pair has
// a merge — the order `tokenizers` uses. A binary heap of candidate pairs makes it O(n log n);
// stale heap entries are recognised by re-checking the two symbol ids. Results are cached per word.
#include <algorithm>
#include <functional>

#include "dsv4/error.hpp"
#include "tokenizer_impl.hpp"

namespace dsv4::tok {

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  slots_.assign(cap, Entry{});
  mask_ = cap - 1;
  size_ = 0;
}

bool MergeTable::insert(int32_t a, int32_t b, int32_t rank, int32_t merged) {
  if ((size_ + 1) * 2 > slots_.size()) {  // keep the load factor at or below 1/2
    std::vector<Entry> old;
    old.swap(slots_);
    reserve(std::max<size_t>(16, old.size()));
    for (const Entry& e : old)
      if (e.key != kEmpty) insert(static_cast<int32_t>(e.key >> 32), static_cast<int32_t>(e.key & 0xffffffffu), e.rank, e.merged);
  }
  const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  size_t i = hash(key) & mask_;
  while (slots_[i].key != kEmpty) {
    if (slots_[i].key == key) {
      slots_[i].rank = rank;
      slots_[i].merged = merged;
      return false;
    }
    i = (i + 1) & mask_;
  }
  slots_[i] = Entry{key, rank, merged};
  ++size_;
  return true;
}

bool WordCache::lookup(std::string_view word, std::vector<int32_t>& out) const {
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;
  const auto it = map_.find(word);
  if (it == map_.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::insert(std::string_view word, const int32_t* ids, size_t n) const {
  if (word.size() > kMaxWordBytes) return;
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  // Bounded memory: start over when full (cheap, and hot words come back immediately).
  if (map_.size() >= kMaxEntries) map_.clear();
  map_.emplace(std::string(word), std::vector<int32_t>(ids, ids + n));
}

void Bpe::merge(std::string_view word, BpeScratch& bs) const {
  auto& id = bs.sym_id;
  auto& prev = bs.sym_prev;
  auto& next = bs.sym_next;
  auto& heap = bs.heap;
  id.clear();
  prev.clear();
  next.clear();
  heap.clear();
  // Initial symbols; a byte missing from the vocabulary becomes unk (fused if asked) or is dropped,
  // as `tokenizers` does — impossible for a complete byte-level vocabulary.
  for (char c : word) {
    int32_t t = byte_id[static_cast<uint8_t>(c)];
    if (t < 0) {
      if (unk_id < 0) continue;
      if (fuse_unk && !id.empty() && id.back() == unk_id) continue;
      t = unk_id;
    }
    id.push_back(t);
  }
  const int32_t n = static_cast<int32_t>(id.size());
  for (int32_t i = 0; i < n; ++i) {
    prev.push_back(i - 1);
    next.push_back(i + 1 < n ? i + 1 : -1);
  }
  auto pack = [](int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  };
  auto push = [&](int32_t pos) {
    const int32_t r = next[pos];
    if (r < 0) return;
    const auto [rank, merged] = merges.find(id[pos], id[r]);
    if (rank < 0) return;
    heap.push_back({(static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(pos), pack(id[pos], id[r])});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const auto [key, pair] = heap.back();
    heap.pop_back();
    const int32_t pos = static_cast<int32_t>(key & 0xffffffffu);
    const int32_t r = next[pos];
    // Stale if either side has been merged into something else since this entry was pushed.
    if (id[pos] < 0 || r < 0 || pack(id[pos], id[r]) != pair) continue;
    const int32_t merged = merges.find(id[pos], id[r]).second;
    id[pos] = merged;
    id[r] = -1;
    next[pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = pos;
    if (prev[pos] >= 0) push(prev[pos]);
    push(pos);
  }
  bs.word_ids.clear();
  for (int32_t i = 0; i >= 0 && i < n; i = next[i]) bs.word_ids.push_back(id[i]);
}

void Bpe::encode_word(std::string_view word, std::vector<int32_t>& out, BpeScratch& bs) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    const int32_t t = byte_id[static_cast<uint8_t>(word[0])];
    if (t >= 0) {
      out.push_back(t);
      return;
    }
  }
  if (ignore_merges) {
    if (auto it = raw_vocab.find(std::string(word)); it != raw_vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (cache.lookup(word, out)) return;
  merge(word, bs);
  out.insert(out.end(), bs.word_ids.begin(), bs.word_ids.end());
  cache.insert(word, bs.word_ids.data(), bs.word_ids.size());
}

}  // namespace dsv4::tok
