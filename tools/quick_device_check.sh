export PYTHONPATH=python PYTHONUNBUFFERED=1
python3 -m pytest -q -x tests 2>&1 | tail -2; build/capi_test_cuda | tail -1
for case in "2,301,3,5 f32" "2,1000,4,16 f32" "1,517,3,64 f16"; do compute-sanitizer --tool racecheck python3 tools/profile_one.py $case 1 2>&1 | grep -E "SUMMARY" | tail -1; compute-sanitizer --tool memcheck python3 tools/profile_one.py $case 1 2>&1 | grep -E "SUMMARY" | tail -1; done
python3 -m nanossm.bench --no-baselines --dtypes f32,f16,bf16 --plot /dev/null 2>&1 | grep -E "^ *(f32|f16|bf16)"
