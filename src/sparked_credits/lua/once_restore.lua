--: argv records
--: keys once
--: reply restored
-- once_restore: write the once-ever keys (prelude.lua, once_lookup) that the ledger implies,
-- as a full repair found them: ARGV[9] 'field=value' pairs separated by spaces (neither
-- holds '=' or ' ': keys and ids are labels). Fields the ledger does not imply (a revoke
-- that took nothing) are kept. Safe to run again. Reply {'restored', n}.
local K_ONCE = KEYS[11]
local n = 0
for field, value in string.gmatch(ARGV[9], '([^ =]+)=([^ ]*)') do
  redis.call('HSET', K_ONCE, field, value)
  n = n + 1
end
return {'restored', fmt(n)}
