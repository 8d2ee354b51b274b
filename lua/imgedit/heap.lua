--- A binary min-heap of timers, shared by the scheduler and the emulator.
--
-- Items are tables with `at` (when they are due) and `seq` (the order they
-- were pushed in, so that items due at the same time come out first in,
-- first out); anything else in them is the caller's.
-- @module imgedit.heap

local heap = {}

local function earlier(a, b)
  return a.at < b.at or (a.at == b.at and a.seq < b.seq)
end

--- Adds `item` to the heap `h` (an array).
function heap.push(h, item)
  local i = #h + 1
  h[i] = item
  while i > 1 do
    local parent = math.floor(i / 2)
    if not earlier(h[i], h[parent]) then break end
    h[i], h[parent] = h[parent], h[i]
    i = parent
  end
end

--- Removes and returns the earliest item of `h` (nil when empty).
function heap.pop(h)
  local top, n = h[1], #h
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while 2 * i <= n do
    local l, r, m = 2 * i, 2 * i + 1, i
    if earlier(h[l], h[m]) then m = l end
    if r <= n and earlier(h[r], h[m]) then m = r end
    if m == i then break end
    h[i], h[m] = h[m], h[i]
    i = m
  end
  return top
end

return heap
