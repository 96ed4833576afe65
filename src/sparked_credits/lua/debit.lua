--: argv amount action reason metadata
--: keys controls alerts
--: reply mutation
--: refusals closed insufficient spend_limit conflict replay_gone
-- debit: ARGV[9] amount, ARGV[10] action, ARGV[11] reason, ARGV[12] metadata JSON.
-- Draws from the lots in consumption order; the entry's '_sc.l' records the draws.
--
-- @fast: scripts.py puts this block BEFORE the prelude.
-- The common debit, without the prelude: a new key, an initialized open account, nothing
-- due (no hold past its ttl, no lot past its expiry, no credits taken without lots), and a
-- first lot that covers the amount and stays open. Redis runs a script's whole chunk on
-- every call and each prelude `local function` is a closure made anew each time; this
-- block runs first, reads what decides the case, and when it is the common one writes
-- exactly what the general path below writes (same entry, same records, same order: the
-- entry, its block sums, the idempotency record, the lot and the lots summary, the
-- balance last) and returns. Anything else falls through, having written nothing, to the general path.
-- tests/test_debit_fast_path.py runs both on the same histories and compares every key.
do
  if redis.replicate_commands then redis.replicate_commands() end
  local function fmt(n) return string.format('%d', n) end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local key = ARGV[1]
  local got = redis.call('HMGET', KEYS[4], key, '')
  local born = tonumber(got[2])
  local fast = not got[1] and born and now - born < tonumber(ARGV[3])
  if fast then fast = not redis.call('HGET', KEYS[5], key) end
  -- The init/closed marks and the block sums' 'n' and 'bo' (prelude.lua) in one read.
  local marks = fast and redis.call('HMGET', KEYS[3], 'init', 'closed', 'n', 'bo')
  if marks and marks[1] and not marks[2] then
    local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
    local summary = redis.call('HGET', KEYS[8], '')
    local tracked, soonest, head, rem, rest
    if summary then
      tracked, soonest, head, rem, rest =
        string.match(summary, '^(%-?%d+)|(%d*)|([^|]+)|(%d+)(|%d+|%d*|%d+|.*)$')
    end
    if rem and tonumber(tracked) <= bal and (soonest == '' or tonumber(soonest) > now)
       and #redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, 1) == 0 then
      local head_exp = string.match(rest, '^|%d+|(%d*)|')
      local amount = tonumber(ARGV[9])
      if bal < amount then
        return {'insufficient', fmt(bal), fmt(amount)}
      end
      local left = tonumber(rem) - amount
      -- The head stays open and the soonest expiry stays what it is (else: general path).
      if left > 0 and (head_exp == '' or
                       (soonest ~= '' and tonumber(head_exp) >= tonumber(soonest))) then
        local after = bal - amount
        local l = head .. ':' .. fmt(amount)
        local sc = '"_sc":{'
        local nonce = ARGV[7] or ''
        if nonce ~= '*' then
          sc = sc .. '"f":"' .. ARGV[2] .. '",'
          if nonce ~= '' then sc = sc .. '"n":"' .. nonce .. '",' end
        end
        sc = sc .. '"l":"' .. l .. '"}'
        local meta = ARGV[12]
        local stored
        if meta == '' or meta == '{}' then stored = '{' .. sc .. '}'
        else stored = '{' .. sc .. ',' .. string.sub(meta, 2) end
        local delta, after_s = fmt(-amount), fmt(after)
        local id = redis.call('XADD', KEYS[2], '*', 'type', 'debit', 'delta', delta,
                              'balance', after_s, 'action', ARGV[10], 'app', ARGV[6],
                              'reason', ARGV[11], 'ref', '', 'idem', key, 'meta', stored)
        local n = tonumber(marks[3] or '0') + 1
        local open_sum = tonumber(marks[4] or '0') - amount
        if n % 1024 == 0 then
          local bf = tonumber(redis.call('HGET', KEYS[3], 'bf') or '0')
          redis.call('HSET', KEYS[3], 'n', fmt(n), 'bo', '0', 'bf', fmt(bf + open_sum),
                     'bfn', fmt(n))
        else
          redis.call('HSET', KEYS[3], 'n', fmt(n), 'bo', fmt(open_sum))
        end
        redis.call('HSET', KEYS[4], key, (ARGV[8] or '') .. '|' .. id)
        local rec = fmt(left) .. rest
        redis.call('HSET', KEYS[8], '',
                   fmt(tonumber(tracked) - amount) .. '|' .. soonest .. '|' .. head .. '|' .. rec,
                   head, rec)
        redis.call('SET', KEYS[1], after_s)
        return {'ok', '0', id, 'debit', delta, after_s, ARGV[10], ARGV[6], ARGV[11], '',
                key, meta, l}
      end
    end
  end
end
-- @end fast
local replay = idem_lookup()
if replay then return replay end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[9])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
local limited, controlled = controls(KEYS[11], KEYS[12], amount, '', bal, bal - amount)
if limited then return limited end
apply_init_if_needed(needs_init, raw)
return commit('debit', -amount, bal - amount, ARGV[10], APP, ARGV[11], '', ARGV[12], controlled,
              draw_for_entry(amount))
